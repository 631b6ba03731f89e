// What the CPU's and the GPU's exact kernels share (host and device code):
// how to sum a group of |x| or x^2 terms of a 16- or 32-bit format exactly,
// given the group's largest and smallest nonzero magnitude (PlanExactSum; the
// proof is in exact_block_cpu.h), and the fixed-point digits of an ExactSum
// (common/exact_sum.h) built from exact doubles and integers.
//
//   ExactPlan plan = PlanExactSum(kExactFp32, /*k=*/2, /*group_bits=*/8,
//                                 largest_bits, smallest_nonzero_bits);
//   switch (plan.tier) { ... }
//   AddDoubleToDigits(sum, [&](int digit, uint64_t v) { digits[digit] += v; });
//
// Thread-safety: pure functions.
#ifndef GRADNORM_KERNELS_INTERNAL_EXACT_TILE_H_
#define GRADNORM_KERNELS_INTERNAL_EXACT_TILE_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace gradnorm {
namespace kernels_internal {

// ExactSum's digits (exact_sum.cc checks that these are its own): 32-bit
// digits, digit i weighing 2^(kExactLowestExponent + 32 * i).
inline constexpr int kExactLowestExponent = -2148;
inline constexpr int kExactDigits = 134;

// A format's magnitudes as unsigned bits, which order as the magnitudes do:
// |x| = m * 2^(max(e, 1) - bias) for the integer significand m < 2^s and the
// biased exponent e.
struct ExactFormat {
  int significand_bits;  // s, the implicit bit included
  int exponent_shift;
  int bias;
  uint32_t abs_mask;
  uint32_t infinity;  // the bits of +Inf; from here up: Inf or NaN
};
inline constexpr ExactFormat kExactFp32{24, 23, 150, 0x7fffffffu, 0x7f800000u};
inline constexpr ExactFormat kExactBf16{8, 7, 134, 0x7fffu, 0x7f80u};
inline constexpr ExactFormat kExactFp16{11, 10, 25, 0x7fffu, 0x7c00u};

enum class ExactTier {
  kZero,       // every term is 0
  kOneLevel,   // plain fp64 sums are exact
  kTwoLevels,  // S from `start`, and residuals (exact_block_cpu.h)
  kBins,       // too wide, or NaN/Inf: integer significands by exponent
};

struct ExactPlan {
  ExactTier tier = ExactTier::kBins;
  double start = 0.0;  // 2^K, kTwoLevels only
  double unit = 0.0;   // ulp(2^K) = 2^(K - 52), kTwoLevels only
};

// 2^K of the two-level sum of a group of at most 2^group_bits terms, |x|
// (k = 1) or x^2 (k = 2), whose largest finite nonzero magnitude has bits
// `largest`: 2 * 2^group_bits * (the bound of the largest term).
GRADNORM_HOST_DEVICE inline double TwoLevelStart(const ExactFormat& f, int k,
                                                 int group_bits,
                                                 uint32_t largest) {
  const int top = static_cast<int>(largest >> f.exponent_shift);
  const int e_hi = top > 1 ? top : 1;
  return ldexp(1.0, group_bits + 1 + k * (f.significand_bits + e_hi - f.bias));
}

// For a group of at most 2^group_bits terms, |x| (k = 1) or x^2 (k = 2), whose
// largest magnitude has bits `largest` and whose smallest nonzero one has bits
// `smallest` (any value when largest is 0).
GRADNORM_HOST_DEVICE inline ExactPlan PlanExactSum(const ExactFormat& f, int k,
                                                   int group_bits,
                                                   uint32_t largest,
                                                   uint32_t smallest) {
  ExactPlan plan;
  if (largest >= f.infinity) return plan;  // bins sort out NaN and Inf
  if (largest == 0) {
    plan.tier = ExactTier::kZero;
    return plan;
  }
  const int top = static_cast<int>(largest >> f.exponent_shift);
  const int bottom = static_cast<int>(smallest >> f.exponent_shift);
  const int e_hi = top > 1 ? top : 1;
  const int e_lo = bottom > 1 ? bottom : 1;
  // Every term is a multiple of u (the smallest term's unit) below
  // 2^width * u.
  const int width = k * (f.significand_bits + e_hi - e_lo);
  if (group_bits + width <= 53) {
    plan.tier = ExactTier::kOneLevel;
    return plan;
  }
  if (2 * group_bits + width > 105) return plan;
  plan.tier = ExactTier::kTwoLevels;
  plan.start = TwoLevelStart(f, k, group_bits, largest);
  plan.unit = ldexp(plan.start, -52);
  return plan;
}

// A two-level group's result: high (a multiple of `unit`) and low (may be
// negative) with high + low >= 0; moves whole units from high to low, exactly,
// so that both are >= 0.
GRADNORM_HOST_DEVICE inline void MakeNonNegative(double unit, double* high,
                                                 double* low) {
  if (*low < 0) {
    const double borrow = ceil(-*low / unit) * unit;
    *high -= borrow;
    *low += borrow;
  }
}

// One lane's share of a group summed by `plan` (kOneLevel or kTwoLevels):
// `values` are the lane's elements widened to fp64, k = 1 (|x|) or 2 (x^2).
// One level: *high = the plain sum, *low = 0. Two levels: *high = S - start
// and *low = the residuals' sum. Summing every lane's high and low (in any
// order) gives the group's two exact parts; MakeNonNegative then readies a
// two-level group's parts for AddDoubleToDigits.
template <int kK>
GRADNORM_HOST_DEVICE inline void LaneSums(const double* values, int count,
                                          const ExactPlan& plan, double* high,
                                          double* low) {
  if (plan.tier == ExactTier::kOneLevel) {
    double sum = 0.0;
    for (int i = 0; i < count; ++i) {
      sum += kK == 2 ? values[i] * values[i] : fabs(values[i]);
    }
    *high = sum;
    *low = 0.0;
    return;
  }
  double s = plan.start;
  double l = 0.0;
  for (int i = 0; i < count; ++i) {
    const double t = kK == 2 ? values[i] * values[i] : fabs(values[i]);
    const double next = s + t;
    l += t - (next - s);
    s = next;
  }
  *high = s - plan.start;
  *low = l;
}

// The bins path: a finite element's bin (its biased exponent field) and its
// integer term, m (k = 1) or m^2 (k = 2), m its significand with the implicit
// bit. A bin takes 2^16 terms of any format before it could overflow.
GRADNORM_HOST_DEVICE inline void BinTerm(const ExactFormat& f, int k,
                                         uint32_t bits, int* bin,
                                         uint64_t* term) {
  const uint32_t magnitude = bits & f.abs_mask;
  const int e = static_cast<int>(magnitude >> f.exponent_shift);
  const uint32_t fraction_mask = (uint32_t{1} << (f.significand_bits - 1)) - 1;
  uint64_t m = magnitude & fraction_mask;
  if (e != 0) m |= uint64_t{1} << (f.significand_bits - 1);
  *bin = e;
  *term = k == 2 ? m * m : m;
}

// Adds bin `bin`'s sum of terms to digits.
template <typename Add>
GRADNORM_HOST_DEVICE inline void AddBinToDigits(const ExactFormat& f, int k,
                                                int bin, uint64_t sum,
                                                Add&& add);

// Adds value * 2^exponent (exponent >= kExactLowestExponent) to 32-bit digits
// through add(digit index, amount), each amount below 2^32 + value's top.
template <typename Add>
GRADNORM_HOST_DEVICE inline void AddScaledToDigits(uint64_t value, int exponent,
                                                   Add&& add) {
  if (value == 0) return;
  const int position = exponent - kExactLowestExponent;
  const int index = position / 32;
  const int shift = position % 32;
  const uint64_t low = value << shift;
  const uint64_t high = shift == 0 ? 0 : value >> (64 - shift);
  add(index, low & 0xffffffffu);
  add(index + 1, low >> 32);
  if (high != 0) add(index + 2, high);
}

// Adds a finite x >= 0, exactly.
template <typename Add>
GRADNORM_HOST_DEVICE inline void AddDoubleToDigits(double x, Add&& add) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof(bits));
  const int e = static_cast<int>(bits >> 52) & 0x7ff;
  uint64_t m = bits & ((uint64_t{1} << 52) - 1);
  if (e != 0) m |= uint64_t{1} << 52;
  AddScaledToDigits(m, (e != 0 ? e : 1) - 1075, add);
}

template <typename Add>
GRADNORM_HOST_DEVICE inline void AddBinToDigits(const ExactFormat& f, int k,
                                                int bin, uint64_t sum,
                                                Add&& add) {
  AddScaledToDigits(sum, k * ((bin > 1 ? bin : 1) - f.bias), add);
}

// Propagates carries so that every digit is below 2^32; returns the carry out
// of the top digit (0 for any sum an ExactSum can hold).
GRADNORM_HOST_DEVICE inline uint64_t NormalizeDigits(uint64_t* digits) {
  uint64_t carry = 0;
  for (int i = 0; i < kExactDigits; ++i) {
    const uint64_t v = digits[i] + carry;
    digits[i] = v & 0xffffffffu;
    carry = v >> 32;
  }
  return carry;
}

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_EXACT_TILE_H_
