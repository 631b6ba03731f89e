// An exact sum of non-negative binary floating-point terms: |g| (p = 1) and
// g^2 (p = 2) of fp64/fp32/bf16/fp16 gradients, with no rounding at all, so
// the sum is the same bits whatever the order and grouping of its terms (any
// sharding, job split, thread count or device).
//
//   ExactSum s;
//   for (double g : grads) s.AddSquare(g);      // g^2 exactly, 106 bits wide
//   ExactSum other = ...;
//   s.Merge(other);                              // exact and associative
//   double total = std::sqrt(s.RoundToDouble());  // the one rounding
//   std::string wire = s.Encode();               // travels whole
//   absl::StatusOr<ExactSum> back = ExactSum::Decode(wire);
//
// The value is a fixed-point number: an integer N of 32-bit digits times
// 2^kLowestExponent, with room for 2^64 terms of the largest fp64 square.
// Non-finite terms are not summed: the first NaN makes the sum NaN, an
// infinity makes it +Inf unless it is NaN (NaN wins, as elsewhere in
// gradnorm).
//
// Thread-safety: a value type; distinct objects may be used concurrently.
#ifndef GRADNORM_COMMON_EXACT_SUM_H_
#define GRADNORM_COMMON_EXACT_SUM_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gradnorm {

class ExactSum {
 public:
  // The weight of the lowest bit: the square of the smallest fp64 subnormal.
  static constexpr int kLowestExponent = -2148;
  // 32-bit digits: 4288 bits, from 2^-2148 to above 2^2112 (the largest fp64
  // square is below 2^2048; 64 bits to spare for the count of terms).
  static constexpr int kDigits = 134;

  // Adds |x| (x of any sign; NaN and infinities as above).
  void AddAbs(double x);
  // Adds x^2, formed exactly (x of any sign).
  void AddSquare(double x);
  // Adds m * 2^exponent for an integer m < 2^106 (the building block of the
  // two above; also what 16- and 32-bit kernels use directly). exponent >=
  // kLowestExponent, and m * 2^exponent < 2^2112.
  void AddScaled(unsigned __int128 m, int exponent);
  void AddNaN() { nan_ = true; }
  void AddInf() { inf_ = true; }
  // Adds every term of `other`.
  void Merge(const ExactSum& other);

  bool is_nan() const { return nan_; }
  bool is_inf() const { return inf_ && !nan_; }
  bool finite() const { return !nan_ && !inf_; }
  bool is_zero() const;

  // The sum correctly rounded to fp64 (to nearest, ties to even; +Inf beyond
  // the fp64 range); NaN or +Inf for a non-finite sum.
  double RoundToDouble() const;

  // The canonical bytes of the sum: equal sums, equal bytes, however they
  // were formed. Version 1: a flags byte (1 NaN, 2 Inf), then, for a finite
  // nonzero sum, the index of the lowest nonzero digit and the digit count
  // (uint16 little-endian each), and the digits (uint32 little-endian, lowest
  // first). At most 5 + 4 * kDigits bytes.
  std::string Encode() const;
  // INVALID_ARGUMENT when `bytes` are not what Encode writes.
  static absl::StatusOr<ExactSum> Decode(absl::string_view bytes);

  // For an exact reduction over a group of ranks with an ordinary
  // floating-point SUM (NCCL, Gloo, MPI): the sum's 32-bit digits as doubles,
  // then a NaN count and an Inf count. Summed entry by entry over fewer than
  // 2^21 ranks, in any order and grouping, every entry stays an integer below
  // 2^53, so the reduction itself rounds nothing; FromReduced turns the sums
  // back into the ExactSum of every rank's sum.
  static constexpr int kReducibleSize = kDigits + 2;
  // `out` has kReducibleSize entries.
  void ToReducible(absl::Span<double> out) const;
  // INVALID_ARGUMENT when `sums` has another size, or an entry that is not an
  // integer in [0, 2^53) (what no sum of ToReducible values can give).
  static absl::StatusOr<ExactSum> FromReduced(absl::Span<const double> sums);

  friend bool operator==(const ExactSum& a, const ExactSum& b) {
    return a.Encode() == b.Encode();
  }

 private:
  // |x| = m * 2^e for a finite x; a NaN or infinity sets its flag instead
  // (false).
  bool Decompose(double x, uint64_t* m, int* e);
  // Propagates carries so that every digit is below 2^32.
  void Normalize();
  void AddDigits(const std::array<uint64_t, kDigits>& digits);

  // Each digit holds 32 bits of the value plus carries not yet propagated;
  // `pending_` counts the additions since the last Normalize (each adds less
  // than 2^32 to a digit, so 2^31 of them fit in 64 bits).
  std::array<uint64_t, kDigits> digits_{};
  uint64_t pending_ = 0;
  bool nan_ = false;
  bool inf_ = false;
};

}  // namespace gradnorm

#endif  // GRADNORM_COMMON_EXACT_SUM_H_
