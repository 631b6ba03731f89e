#include "common/exact_sum.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace {

constexpr uint64_t kDigitMask = 0xffffffffu;
// Normalize before a digit could exceed 2^64: each addition adds < 2^32.
constexpr uint64_t kMaxPending = uint64_t{1} << 31;
constexpr uint8_t kVersion = 1;
constexpr uint8_t kNaNFlag = 1;
constexpr uint8_t kInfFlag = 2;

// The integer significand and exponent of a finite double: |x| = m * 2^e.
void DecomposeFinite(double x, uint64_t* m, int* e) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  const int biased = static_cast<int>((bits >> 52) & 0x7ff);
  const uint64_t fraction = bits & ((uint64_t{1} << 52) - 1);
  if (biased == 0) {  // Subnormal or zero.
    *m = fraction;
    *e = -1074;
  } else {
    *m = fraction | (uint64_t{1} << 52);
    *e = biased - 1075;
  }
}

void PutU16(std::string* out, uint16_t v) {
  out->push_back(static_cast<char>(v & 0xff));
  out->push_back(static_cast<char>(v >> 8));
}

uint32_t GetU32(absl::string_view bytes, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) {
    v = (v << 8) | static_cast<uint8_t>(bytes[at + i]);
  }
  return v;
}

}  // namespace

void ExactSum::AddScaled(unsigned __int128 m, int exponent) {
  if (m == 0) return;
  if (pending_ >= kMaxPending) Normalize();
  // Two 64-bit halves, each shifted by less than a digit: three digits each.
  const int position = exponent - kLowestExponent;
  for (int half = 0; half < 2; ++half) {
    const uint64_t v = static_cast<uint64_t>(m >> (64 * half));
    if (v == 0) continue;
    const int bit = position + 64 * half;
    const int index = bit / 32;
    const unsigned __int128 shifted = static_cast<unsigned __int128>(v)
                                      << (bit % 32);
    digits_[index] += static_cast<uint64_t>(shifted) & kDigitMask;
    digits_[index + 1] += static_cast<uint64_t>(shifted >> 32) & kDigitMask;
    const uint64_t top = static_cast<uint64_t>(shifted >> 64);
    if (top != 0) digits_[index + 2] += top;
  }
  ++pending_;
}

void ExactSum::AddAbs(double x) {
  uint64_t m;
  int e;
  if (Decompose(x, &m, &e)) AddScaled(m, e);
}

void ExactSum::AddSquare(double x) {
  uint64_t m;
  int e;
  if (Decompose(x, &m, &e)) {
    AddScaled(static_cast<unsigned __int128>(m) * m, 2 * e);
  }
}

bool ExactSum::Decompose(double x, uint64_t* m, int* e) {
  if (std::isnan(x)) {
    nan_ = true;
    return false;
  }
  if (std::isinf(x)) {
    inf_ = true;
    return false;
  }
  DecomposeFinite(x, m, e);
  return true;
}

void ExactSum::Normalize() {
  uint64_t carry = 0;
  for (int i = 0; i < kDigits; ++i) {
    const unsigned __int128 v =
        static_cast<unsigned __int128>(digits_[i]) + carry;
    digits_[i] = static_cast<uint64_t>(v) & kDigitMask;
    carry = static_cast<uint64_t>(v >> 32);
  }
  // carry is 0 here: fewer than 2^64 terms below 2^2048 stay below 2^2112.
  pending_ = 0;
}

void ExactSum::AddDigits(const std::array<uint64_t, kDigits>& digits) {
  if (pending_ >= kMaxPending) Normalize();
  for (int i = 0; i < kDigits; ++i) digits_[i] += digits[i];
  ++pending_;
}

void ExactSum::Merge(const ExactSum& other) {
  nan_ = nan_ || other.nan_;
  inf_ = inf_ || other.inf_;
  ExactSum normalized = other;
  normalized.Normalize();
  AddDigits(normalized.digits_);
}

bool ExactSum::is_zero() const {
  for (uint64_t d : digits_) {
    if (d != 0) return false;
  }
  return true;
}

double ExactSum::RoundToDouble() const {
  if (nan_) return std::numeric_limits<double>::quiet_NaN();
  if (inf_) return std::numeric_limits<double>::infinity();
  ExactSum n = *this;
  n.Normalize();
  int top = kDigits - 1;
  while (top >= 0 && n.digits_[top] == 0) --top;
  if (top < 0) return 0.0;
  auto bit = [&](int k) -> uint64_t {
    return k < 0 ? 0 : (n.digits_[k / 32] >> (k % 32)) & 1;
  };
  // The value's leading bit, as a bit index of N (weight 2^(k - 2148)).
  const int lead = top * 32 + (63 - __builtin_clzll(n.digits_[top]));
  // Keep 53 bits, or down to 2^-1074 for a subnormal result.
  const int subnormal_cut = -1074 - kLowestExponent;
  const int cut = lead + kLowestExponent >= -1022 ? lead - 52 : subnormal_cut;
  uint64_t q = 0;
  for (int k = lead; k >= cut; --k) q = (q << 1) | bit(k);
  const uint64_t round = bit(cut - 1);
  bool sticky = false;
  for (int k = cut - 2; k >= 0 && !sticky; --k) {
    if (k % 32 == 31 && n.digits_[k / 32] == 0) {
      k -= 31;  // A whole zero digit.
      continue;
    }
    sticky = bit(k) != 0;
  }
  if (round != 0 && (sticky || (q & 1) != 0)) ++q;
  // q <= 2^53 and the scaling is a power of two: exact, or +Inf past fp64.
  return std::ldexp(static_cast<double>(q), cut + kLowestExponent);
}

std::string ExactSum::Encode() const {
  std::string out;
  out.push_back(static_cast<char>(kVersion));
  if (nan_ || inf_) {
    out.push_back(static_cast<char>(nan_ ? kNaNFlag : kInfFlag));
    return out;
  }
  out.push_back(0);
  ExactSum n = *this;
  n.Normalize();
  int low = 0, high = kDigits - 1;
  while (high >= 0 && n.digits_[high] == 0) --high;
  if (high < 0) return out;
  while (n.digits_[low] == 0) ++low;
  PutU16(&out, static_cast<uint16_t>(low));
  PutU16(&out, static_cast<uint16_t>(high - low + 1));
  for (int i = low; i <= high; ++i) {
    const uint32_t d = static_cast<uint32_t>(n.digits_[i]);
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>(d >> (8 * b)));
  }
  return out;
}

absl::StatusOr<ExactSum> ExactSum::Decode(absl::string_view bytes) {
  auto invalid = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an exact partial of ", bytes.size(), " bytes is invalid: ", why,
        "; expected what ExactSum::Encode writes (version 1)"));
  };
  if (bytes.size() < 2) return invalid("too short");
  if (static_cast<uint8_t>(bytes[0]) != kVersion) {
    return invalid(absl::StrCat("version ", static_cast<uint8_t>(bytes[0])));
  }
  ExactSum sum;
  const uint8_t flags = static_cast<uint8_t>(bytes[1]);
  if (flags == kNaNFlag || flags == kInfFlag) {
    if (bytes.size() != 2) return invalid("a non-finite sum with digits");
    (flags == kNaNFlag ? sum.nan_ : sum.inf_) = true;
    return sum;
  }
  if (flags != 0) return invalid(absl::StrCat("flags ", flags));
  if (bytes.size() == 2) return sum;  // Zero.
  if (bytes.size() < 6) return invalid("too short for its digits");
  const int low =
      static_cast<uint8_t>(bytes[2]) | (static_cast<uint8_t>(bytes[3]) << 8);
  const int count =
      static_cast<uint8_t>(bytes[4]) | (static_cast<uint8_t>(bytes[5]) << 8);
  if (count == 0 || low + count > kDigits) {
    return invalid(
        absl::StrCat("digits ", low, " to ", low + count - 1, " of ", kDigits));
  }
  if (bytes.size() != 6 + 4 * static_cast<size_t>(count)) {
    return invalid(
        absl::StrCat(count, " digits in ", bytes.size() - 6, " bytes"));
  }
  for (int i = 0; i < count; ++i) {
    sum.digits_[low + i] = GetU32(bytes, 6 + 4 * i);
  }
  if (sum.digits_[low] == 0 || sum.digits_[low + count - 1] == 0) {
    return invalid("not canonical (a zero digit at either end)");
  }
  return sum;
}

void ExactSum::ToReducible(absl::Span<double> out) const {
  ExactSum n = *this;
  n.Normalize();
  for (int i = 0; i < kDigits; ++i) out[i] = static_cast<double>(n.digits_[i]);
  out[kDigits] = nan_ ? 1.0 : 0.0;
  out[kDigits + 1] = inf_ ? 1.0 : 0.0;
}

absl::StatusOr<ExactSum> ExactSum::FromReduced(absl::Span<const double> sums) {
  if (sums.size() != static_cast<size_t>(kReducibleSize)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a reduced exact sum has ", sums.size(),
                     " entries; expected ", kReducibleSize));
  }
  constexpr double kLimit = 9007199254740992.0;  // 2^53
  for (size_t i = 0; i < sums.size(); ++i) {
    const double v = sums[i];
    if (!(v >= 0 && v < kLimit) || v != std::floor(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "entry ", i, " of a reduced exact sum is ", v,
          "; expected an integer from 0 to 2^53 - 1 (a sum of ToReducible "
          "values over fewer than 2^21 ranks)"));
    }
  }
  ExactSum sum;
  for (int i = 0; i < kDigits; ++i) {
    sum.AddScaled(static_cast<uint64_t>(sums[i]), kLowestExponent + 32 * i);
  }
  sum.nan_ = sums[kDigits] > 0;
  sum.inf_ = sums[kDigits + 1] > 0;
  return sum;
}

}  // namespace gradnorm
