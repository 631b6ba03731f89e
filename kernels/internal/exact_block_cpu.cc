// The SIMD code of exact_block_cpu.h (the bounds that keep it exact are
// there). Highway compiles the per-target section once per SIMD target
// (foreach_target.h re-includes this file).
#include "kernels/internal/exact_block_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

#include "kernels/internal/cpu_prefetch.h"
#include "kernels/internal/exact_tile.h"
#include "kernels/internal/float_status.h"
#include "kernels/internal/half.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/exact_block_cpu.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/internal/widen16-inl.h"

// The checked sums rest on IEEE arithmetic as written: every operation that
// could round feeds the flag check, and isfinite sees NaN and Inf.
#if defined(__FAST_MATH__) || __FINITE_MATH_ONLY__
#error "exact_block_cpu.cc must not be built with -ffast-math"
#endif

// The checked sums of exact_block_cpu.h: x86 targets with AVX-512.
#undef GRADNORM_EXACT_CHECKED
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
#define GRADNORM_EXACT_CHECKED 1
#include <immintrin.h>
#else
#define GRADNORM_EXACT_CHECKED 0
#endif

static_assert(gradnorm::kernels_internal::kExactLowestExponent ==
                      gradnorm::ExactSum::kLowestExponent &&
                  gradnorm::kernels_internal::kExactDigits ==
                      gradnorm::ExactSum::kDigits,
              "exact_tile.h must describe ExactSum's digits");

HWY_BEFORE_NAMESPACE();
namespace gradnorm {
namespace kernels_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

enum class Fmt { kFp32, kBf16, kFp16 };

template <Fmt kFmt>
constexpr ExactFormat FormatOf() {
  if constexpr (kFmt == Fmt::kFp32) {
    return kExactFp32;
  } else if constexpr (kFmt == Fmt::kBf16) {
    return kExactBf16;
  } else {
    return kExactFp16;
  }
}

template <Fmt kFmt>
using BitsOf = std::conditional_t<kFmt == Fmt::kFp32, uint32_t, uint16_t>;

// Lanes(dd) elements from index i, widened to fp64 (exact for each format).
template <Fmt kFmt, class DD>
HWY_INLINE hn::Vec<DD> LoadAsDouble(DD dd, const void* HWY_RESTRICT data,
                                    int64_t i) {
  const hn::Rebind<float, DD> df;
  if constexpr (kFmt == Fmt::kFp32) {
    const float* HWY_RESTRICT p = static_cast<const float*>(data) + i;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
    // Two 256-bit widenings and an insert: 6% faster here than one 512-bit
    // widening.
    const hn::Half<DD> dh;
    const hn::Rebind<float, decltype(dh)> dfh;
    return hn::Combine(dd, hn::PromoteTo(dh, hn::LoadU(dfh, p + hn::Lanes(dh))),
                       hn::PromoteTo(dh, hn::LoadU(dfh, p)));
#else
    return hn::PromoteTo(dd, hn::LoadU(df, p));
#endif
  } else {
    const hn::Rebind<uint16_t, DD> d16;
    const auto bits = hn::LoadU(d16, static_cast<const uint16_t*>(data) + i);
    return hn::PromoteTo(
        dd, kFmt == Fmt::kBf16 ? WidenBFloat16(df, bits) : WidenHalf(df, bits));
  }
}

// 4 * Lanes(dd) elements from index i as four fp64 vectors, in an order of
// their own (sums do not care). bf16 loads two runs of 2 * Lanes(dd)
// elements as pairs in 32-bit lanes: the even elements shifted up and the
// odd ones masked are fp32 bits, with no shuffle to widen them (on AVX-512
// this ran 20% faster than interleaving a whole vector and taking halves).
template <Fmt kFmt, class DD>
HWY_INLINE void LoadGroup(DD dd, const void* HWY_RESTRICT data, int64_t i,
                          hn::Vec<DD>* v) {
#if HWY_TARGET != HWY_SCALAR
  if constexpr (kFmt == Fmt::kBf16) {
    const hn::Rebind<float, DD> df;
    const hn::RebindToUnsigned<decltype(df)> d32;
    const hn::Repartition<uint16_t, decltype(d32)> d16;
    const uint16_t* HWY_RESTRICT p = static_cast<const uint16_t*>(data) + i;
    const auto odd = hn::Set(d32, 0xffff0000u);
    const auto pairs0 = hn::BitCast(d32, hn::LoadU(d16, p));
    const auto pairs1 = hn::BitCast(d32, hn::LoadU(d16, p + 2 * hn::Lanes(dd)));
    v[0] = hn::PromoteTo(dd, hn::BitCast(df, hn::ShiftLeft<16>(pairs0)));
    v[1] = hn::PromoteTo(dd, hn::BitCast(df, hn::And(pairs0, odd)));
    v[2] = hn::PromoteTo(dd, hn::BitCast(df, hn::ShiftLeft<16>(pairs1)));
    v[3] = hn::PromoteTo(dd, hn::BitCast(df, hn::And(pairs1, odd)));
    return;
  }
#endif
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  // Unrolled by hand: as a loop, the vectors went through memory.
  v[0] = LoadAsDouble<kFmt>(dd, data, i);
  v[1] = LoadAsDouble<kFmt>(dd, data, i + lanes);
  v[2] = LoadAsDouble<kFmt>(dd, data, i + 2 * lanes);
  v[3] = LoadAsDouble<kFmt>(dd, data, i + 3 * lanes);
}

// Prefetches (cpu_prefetch.h) the stream ahead of the `count` elements from
// index i, up to `end` (nullptr: no prefetching).
template <typename T>
HWY_INLINE void PrefetchFrom(const void* data, int64_t i, int64_t count,
                             const void* end) {
  if (end != nullptr) {
    PrefetchAhead(static_cast<const T*>(data) + i,
                  static_cast<size_t>(count) * sizeof(T), end);
  }
}

template <Fmt kFmt>
double ScalarAt(const void* data, int64_t i) {
  if constexpr (kFmt == Fmt::kFp32) {
    return static_cast<const float*>(data)[i];
  } else if constexpr (kFmt == Fmt::kBf16) {
    return half_internal::BFloat16BitsToFloat(
        static_cast<const uint16_t*>(data)[i]);
  } else {
    return half_internal::HalfBitsToFloat(
        static_cast<const uint16_t*>(data)[i]);
  }
}

// The largest magnitude's bits and the smallest nonzero magnitude's bits minus
// one (all ones when every element is zero).
template <typename U>
void MagnitudeRange(const U* HWY_RESTRICT x, int64_t n, U abs_mask,
                    const void* prefetch_end, U* largest,
                    U* smallest_minus_one) {
  const hn::ScalableTag<U> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto mask = hn::Set(d, abs_mask);
  const auto one = hn::Set(d, U{1});
  auto hi = hn::Zero(d);
  auto lo = hn::Set(d, static_cast<U>(~U{0}));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    PrefetchFrom<U>(x, i, lanes, prefetch_end);
    const auto a = hn::And(hn::LoadU(d, x + i), mask);
    hi = hn::Max(hi, a);
    lo = hn::Min(lo, hn::Sub(a, one));  // zero wraps to all ones
  }
  U h = hn::GetLane(hn::MaxOfLanes(d, hi));
  U l = hn::GetLane(hn::MinOfLanes(d, lo));
  for (; i < n; ++i) {
    const U a = static_cast<U>(x[i] & abs_mask);
    h = std::max(h, a);
    l = std::min(l, static_cast<U>(a - 1));
  }
  *largest = h;
  *smallest_minus_one = l;
}

#if GRADNORM_EXACT_CHECKED
// s + v^2 (squares) or s + |v|, rounded to nearest without raising a flag.
template <bool kSquares, class V>
HWY_INLINE V AddRoundingQuietly(V s, V v) {
  constexpr int kQuiet = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  if constexpr (kSquares) {
    return V{_mm512_fmadd_round_pd(v.raw, v.raw, s.raw, kQuiet)};
  } else {
    return V{_mm512_add_round_pd(s.raw, hn::Abs(v).raw, kQuiet)};
  }
}
#endif  // GRADNORM_EXACT_CHECKED

// A group's elements at most (4 vectors of fp64 lanes).
inline constexpr int kGroupMax = 4 * HWY_MAX_BYTES / sizeof(double);

// Copies the elements [i, n) of a block, fewer than a group, to the start of
// `padded`, whose other elements are zero: the last group of a block is
// summed from there, and zeros add nothing to any sum.
template <Fmt kFmt>
HWY_INLINE void CopyTail(const void* data, int64_t i, int64_t n,
                         BitsOf<kFmt>* padded) {
  std::memcpy(padded, static_cast<const BitsOf<kFmt>*>(data) + i,
              static_cast<size_t>(n - i) * sizeof(BitsOf<kFmt>));
}

// A group's four vectors added (|x| or x^2) into four lanes' sums.
template <Fmt kFmt, bool kSquares, class DD, class V = hn::Vec<DD>>
HWY_INLINE void OneLevelGroup(DD dd, const void* HWY_RESTRICT from, int64_t at,
                              V& a0, V& a1, V& a2, V& a3) {
  V v[4];
  LoadGroup<kFmt>(dd, from, at, v);
  if constexpr (kSquares) {
    a0 = hn::MulAdd(v[0], v[0], a0);
    a1 = hn::MulAdd(v[1], v[1], a1);
    a2 = hn::MulAdd(v[2], v[2], a2);
    a3 = hn::MulAdd(v[3], v[3], a3);
  } else {
    a0 = hn::Add(a0, hn::Abs(v[0]));
    a1 = hn::Add(a1, hn::Abs(v[1]));
    a2 = hn::Add(a2, hn::Abs(v[2]));
    a3 = hn::Add(a3, hn::Abs(v[3]));
  }
}

// The lanes' sums of one level (a0..a3), over the elements from `data`, the
// last group padded with zeros.
template <Fmt kFmt, bool kSquares, class DD, class V = hn::Vec<DD>>
HWY_INLINE void OneLevelLanes(DD dd, const void* data, int64_t n,
                              const void* prefetch_end, V& a0, V& a1, V& a2,
                              V& a3) {
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  a0 = a1 = a2 = a3 = hn::Zero(dd);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    PrefetchFrom<BitsOf<kFmt>>(data, i, 4 * lanes, prefetch_end);
    OneLevelGroup<kFmt, kSquares>(dd, data, i, a0, a1, a2, a3);
  }
  if (i < n) {
    HWY_ALIGN BitsOf<kFmt> padded[kGroupMax] = {};
    CopyTail<kFmt>(data, i, n, padded);
    OneLevelGroup<kFmt, kSquares>(dd, padded, 0, a0, a1, a2, a3);
  }
}

// One level: the plain fp64 sum of the lanes' sums (exact under the
// plan's bound; checked sums check it).
template <Fmt kFmt, bool kSquares>
double OneLevelTotal(const void* data, int64_t n, const void* prefetch_end) {
  const hn::ScalableTag<double> dd;
  hn::Vec<decltype(dd)> a0, a1, a2, a3;
  OneLevelLanes<kFmt, kSquares>(dd, data, n, prefetch_end, a0, a1, a2, a3);
  return hn::GetLane(
      hn::SumOfLanes(dd, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// One two-level step: S' = fl(S + t); L += t - (S' - S). With squares
// t = v * v is exact, so the fused and unfused forms give the same bits on
// every target. (Functions, not lambdas: the compiler is told to inline
// them, and the vectors stay in registers.)
template <bool kSquares, bool kQuiet, class V>
HWY_INLINE void TwoLevelStep(V v, V& s, V& l) {
  V next;
#if GRADNORM_EXACT_CHECKED
  if constexpr (kQuiet) next = AddRoundingQuietly<kSquares>(s, v);
#endif
  if constexpr (kSquares) {
    if constexpr (!kQuiet) next = hn::MulAdd(v, v, s);
    l = hn::Add(l, hn::MulSub(v, v, hn::Sub(next, s)));
  } else {
    const V t = hn::Abs(v);
    if constexpr (!kQuiet) next = hn::Add(s, t);
    l = hn::Add(l, hn::Sub(t, hn::Sub(next, s)));
  }
  s = next;
}

// A group's four vectors into four (S, L) pairs.
template <Fmt kFmt, bool kSquares, bool kQuiet, class DD, class V = hn::Vec<DD>>
HWY_INLINE void TwoLevelGroup(DD dd, const void* HWY_RESTRICT from, int64_t at,
                              V& s1, V& s2, V& s3, V& s4, V& l1, V& l2, V& l3,
                              V& l4) {
  V v[4];
  LoadGroup<kFmt>(dd, from, at, v);
  TwoLevelStep<kSquares, kQuiet>(v[0], s1, l1);
  TwoLevelStep<kSquares, kQuiet>(v[1], s2, l2);
  TwoLevelStep<kSquares, kQuiet>(v[2], s3, l3);
  TwoLevelStep<kSquares, kQuiet>(v[3], s4, l4);
}

// Two levels: per lane S from `start` and L, as in the header; `high` gets
// sum(S - start) and `low` sum(L). kQuiet (checked sums only): S' = fl(S + t)
// rounds without raising a flag.
template <Fmt kFmt, bool kSquares, bool kQuiet = false>
void SumTwoLevels(const void* HWY_RESTRICT data, int64_t n, double start,
                  const void* prefetch_end, double* high, double* low) {
  const hn::ScalableTag<double> dd;
  using V = hn::Vec<decltype(dd)>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const V s0 = hn::Set(dd, start);
  V s1 = s0, s2 = s0, s3 = s0, s4 = s0;
  V l1 = hn::Zero(dd), l2 = hn::Zero(dd), l3 = hn::Zero(dd), l4 = hn::Zero(dd);
  int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    PrefetchFrom<BitsOf<kFmt>>(data, i, 4 * lanes, prefetch_end);
    TwoLevelGroup<kFmt, kSquares, kQuiet>(dd, data, i, s1, s2, s3, s4, l1, l2,
                                          l3, l4);
  }
  if (i < n) {
    HWY_ALIGN BitsOf<kFmt> padded[kGroupMax] = {};
    CopyTail<kFmt>(data, i, n, padded);
    TwoLevelGroup<kFmt, kSquares, kQuiet>(dd, padded, 0, s1, s2, s3, s4, l1, l2,
                                          l3, l4);
  }
  const V h = hn::Add(hn::Add(hn::Sub(s1, s0), hn::Sub(s2, s0)),
                      hn::Add(hn::Sub(s3, s0), hn::Sub(s4, s0)));
  *high = hn::GetLane(hn::SumOfLanes(dd, h));
  *low = hn::GetLane(
      hn::SumOfLanes(dd, hn::Add(hn::Add(l1, l2), hn::Add(l3, l4))));
}

// Copies the n elements' bits to `kept`, with each element below `threshold`
// (magnitude bits 0 < |x| < threshold) zeroed there and its value appended to
// outliers[*count]; false when more than kMaxOutliers are below.
template <Fmt kFmt>
bool SplitOutliers(const BitsOf<kFmt>* HWY_RESTRICT x, int64_t n,
                   BitsOf<kFmt> threshold, BitsOf<kFmt>* HWY_RESTRICT kept,
                   double* outliers, int* count) {
  using U = BitsOf<kFmt>;
  using S = std::make_signed_t<U>;
  constexpr U kAbs = static_cast<U>(FormatOf<kFmt>().abs_mask);
  const hn::ScalableTag<U> d;
  const hn::RebindToSigned<decltype(d)> ds;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  // Magnitudes are below 2^(bits - 1), so signed comparisons order them.
  const auto abs_mask = hn::Set(d, kAbs);
  const auto below = hn::Set(ds, static_cast<S>(threshold));
  const auto zero = hn::Zero(ds);
  auto take = [&](int64_t i) {
    const U a = static_cast<U>(x[i] & kAbs);
    if (a == 0 || a >= threshold) return true;
    if (*count == kMaxOutliers) return false;
    outliers[(*count)++] = ScalarAt<kFmt>(x, i);
    return true;
  };
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(d, x + i);
    const auto a = hn::BitCast(ds, hn::And(v, abs_mask));
    const auto outlier = hn::And(hn::Gt(a, zero), hn::Lt(a, below));
    hn::StoreU(hn::IfThenZeroElse(hn::RebindMask(d, outlier), v), d, kept + i);
    if (hn::AllFalse(ds, outlier)) continue;
    for (int64_t j = i; j < i + lanes; ++j) {
      if (!take(j)) return false;
    }
  }
  for (; i < n; ++i) {
    const U a = static_cast<U>(x[i] & kAbs);
    kept[i] = (a != 0 && a < threshold) ? U{0} : x[i];
    if (!take(i)) return false;
  }
  return true;
}

// Adds the sum `plan` (kZero, kOneLevel or kTwoLevels) says how to take;
// false for kBins.
template <Fmt kFmt>
bool AddPlanned(const ExactPlan& plan, const void* HWY_RESTRICT data, int64_t n,
                bool squares, ExactSum* out) {
  switch (plan.tier) {
    case ExactTier::kZero:
      return true;
    case ExactTier::kOneLevel:
      out->AddAbs(squares ? OneLevelTotal<kFmt, true>(data, n, nullptr)
                          : OneLevelTotal<kFmt, false>(data, n, nullptr));
      return true;
    case ExactTier::kTwoLevels: {
      double high, low;
      squares
          ? SumTwoLevels<kFmt, true>(data, n, plan.start, nullptr, &high, &low)
          : SumTwoLevels<kFmt, false>(data, n, plan.start, nullptr, &high,
                                      &low);
      MakeNonNegative(plan.unit, &high, &low);
      out->AddAbs(high);
      out->AddAbs(low);
      return true;
    }
    case ExactTier::kBins:
      break;
  }
  return false;
}

// Whether one level mostly holds for the format's terms (all but fp32
// squares).
template <Fmt kFmt>
bool OneLevelFirst(bool squares) {
  const int width = (squares ? 2 : 1) * FormatOf<kFmt>().significand_bits;
  return width + kExactBlockBits <= 53;
}

#if GRADNORM_EXACT_CHECKED
// One level, checked: the lanes' sums and their total. When that rounds,
// the lanes' sums are taken again and checked alone; if only their total
// rounded, they are added one by one.
template <Fmt kFmt, bool kSquares>
bool AddOneLevelChecked(const void* data, int64_t n, const void* prefetch_end,
                        FloatStatusScope& status, ExactSum* out) {
  const hn::ScalableTag<double> dd;
  using V = hn::Vec<decltype(dd)>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const double total = OneLevelTotal<kFmt, kSquares>(data, n, prefetch_end);
  if (status.NothingRounded(total, 0.0)) {
    if (!std::isfinite(total)) return false;  // NaN or Inf
    out->AddAbs(total);
    return true;
  }
  status.Clean(data);
  V a0, a1, a2, a3;
  OneLevelLanes<kFmt, kSquares>(dd, data, n, nullptr, a0, a1, a2, a3);
  if (!status.NothingRoundedFor(a0, a1, a2, a3)) return false;
  HWY_ALIGN double sums[kGroupMax];
  hn::Store(a0, dd, sums);
  hn::Store(a1, dd, sums + lanes);
  hn::Store(a2, dd, sums + 2 * lanes);
  hn::Store(a3, dd, sums + 3 * lanes);
  for (int64_t k = 0; k < 4 * lanes; ++k) {
    if (!std::isfinite(sums[k])) return false;
  }
  for (int64_t k = 0; k < 4 * lanes; ++k) out->AddAbs(sums[k]);
  return true;
}

// The two-level sum from `start` (S' rounded quietly) as two parts >= 0.
template <Fmt kFmt>
void TwoLevelParts(const void* data, int64_t n, bool squares, double start,
                   const void* prefetch_end, double* high, double* low) {
  squares
      ? SumTwoLevels<kFmt, true, true>(data, n, start, prefetch_end, high, low)
      : SumTwoLevels<kFmt, false, true>(data, n, start, prefetch_end, high,
                                        low);
  MakeNonNegative(std::ldexp(start, -52), high, low);
}

// Adds a checked sum's two parts (each >= 0) when no operation since the
// flags were cleared rounded and both are finite (NaN and Inf come out as a
// sum that is not finite, or raise a flag); false, adding nothing, if not.
inline bool AddIfNothingRounded(FloatStatusScope& status, double high,
                                double low, ExactSum* out) {
  if (!status.NothingRounded(high, low) || !std::isfinite(high) ||
      !std::isfinite(low)) {
    return false;
  }
  out->AddAbs(high);
  out->AddAbs(low);
  return true;
}

// The checked sum of one block: one level (start 0) or two levels from
// `start`; false (nothing added) when an operation that must not round did.
template <Fmt kFmt>
bool AddChecked(const void* data, int64_t n, bool squares, double start,
                const void* prefetch_end, FloatStatusScope& status,
                ExactSum* out) {
  status.Clean(data);
  if (start == 0.0) {
    return squares ? AddOneLevelChecked<kFmt, true>(data, n, prefetch_end,
                                                    status, out)
                   : AddOneLevelChecked<kFmt, false>(data, n, prefetch_end,
                                                     status, out);
  }
  double high, low;
  TwoLevelParts<kFmt>(data, n, squares, start, prefetch_end, &high, &low);
  return AddIfNothingRounded(status, high, low, out);
}

// One level first where terms are narrow enough that it mostly holds (all
// but fp32 squares), then two levels from the run's start. The first pass
// over the block prefetches (and sets prefetch_end to nullptr): a later one
// reads the block from L1.
template <Fmt kFmt>
bool AddCheckedInRun(const void* data, int64_t n, bool squares, double start,
                     const void*& prefetch_end, FloatStatusScope& status,
                     ExactSum* out) {
  if (OneLevelFirst<kFmt>(squares)) {
    const void* end = prefetch_end;
    prefetch_end = nullptr;
    if (AddChecked<kFmt>(data, n, squares, 0.0, end, status, out)) return true;
  }
  if (start == 0.0) return false;
  const void* end = prefetch_end;
  prefetch_end = nullptr;
  return AddChecked<kFmt>(data, n, squares, start, end, status, out);
}
#endif  // GRADNORM_EXACT_CHECKED

#if GRADNORM_EXACT_CHECKED
// The one-level lanes' sums of a batch's blocks, split exactly around C:
// hi = fl(a + C) - C (the rounding quiet) and lo = a - hi, each summed over
// the batch. hi is a multiple of ulp(C) and |lo| <= ulp(C) / 2, so both sums
// stay far narrower than one total of lanes would: they do not round where
// the lanes' sums did not. C = 2^8 times the first block's largest lane
// sum, rounded up to a power of two; `unit` gets ulp(C).
template <Fmt kFmt, bool kSquares>
void OneLevelBatchParts(const void* data, int64_t n, const void* prefetch_end,
                        double* high, double* low, double* unit) {
  const hn::ScalableTag<double> dd;
  using V = hn::Vec<decltype(dd)>;
  V hi = hn::Zero(dd), lo = hn::Zero(dd), c = hn::Zero(dd);
  for (int64_t at = 0; at < n; at += kExactBlockElements) {
    V a[4];
    OneLevelLanes<kFmt, kSquares>(dd,
                                  static_cast<const BitsOf<kFmt>*>(data) + at,
                                  std::min(kExactBlockElements, n - at),
                                  prefetch_end, a[0], a[1], a[2], a[3]);
    if (at == 0) {
      const double largest = hn::GetLane(hn::MaxOfLanes(
          dd, hn::Max(hn::Max(a[0], a[1]), hn::Max(a[2], a[3]))));
      int exponent = 0;
      std::frexp(largest, &exponent);  // largest < 2^exponent (0: any)
      c = hn::Set(dd, std::ldexp(1.0, std::max(exponent, -1000) + 8));
    }
    for (const V& v : a) {
      const V split = hn::Sub(AddRoundingQuietly<false>(c, v), c);
      hi = hn::Add(hi, split);
      lo = hn::Add(lo, hn::Sub(v, split));
    }
  }
  *high = hn::GetLane(hn::SumOfLanes(dd, hi));
  *low = hn::GetLane(hn::SumOfLanes(dd, lo));
  *unit = std::ldexp(hn::GetLane(c), -52);
}

// Every block of a batch summed the way that nearly always holds (one level,
// or two levels from `start`), with the flags read once for them all: the
// read waits for the arithmetic, once per batch instead of once per block.
// False (nothing added) when anything rounded: the caller then takes the
// blocks one by one.
template <Fmt kFmt>
bool AddBatchChecked(const void* data, int64_t n, bool squares, double start,
                     const void* prefetch_end, FloatStatusScope& status,
                     ExactSum* out) {
  const bool one_level = OneLevelFirst<kFmt>(squares);
  if (!one_level && start == 0.0) return false;
  status.Clean(data);
  double high, low;
  if (one_level) {
    double unit;
    squares ? OneLevelBatchParts<kFmt, true>(data, n, prefetch_end, &high, &low,
                                             &unit)
            : OneLevelBatchParts<kFmt, false>(data, n, prefetch_end, &high,
                                              &low, &unit);
    MakeNonNegative(unit, &high, &low);
  } else {
    // The batch's blocks in one go: each lane's S grows by the whole batch's
    // terms, still far below 2^(K+1) for blocks like the one that set the
    // start (and if not, the flags say so).
    TwoLevelParts<kFmt>(data, n, squares, start, prefetch_end, &high, &low);
  }
  return AddIfNothingRounded(status, high, low, out);
}
#endif  // GRADNORM_EXACT_CHECKED

template <Fmt kFmt>
bool AddBlock(const void* data, int64_t n, bool squares, ExactBlockRun* run,
              bool* checked_failed, ExactSum* out) {
  const void* prefetch_end = run != nullptr ? run->end() : nullptr;
  std::optional<FloatStatusScope> own_status;
  FloatStatusScope& status =
      run != nullptr ? run->status() : own_status.emplace();
#if GRADNORM_EXACT_CHECKED
  // (fp32 squares with no start yet have nothing to try.)
  if (checked_failed != nullptr &&
      (OneLevelFirst<kFmt>(squares) || run->start() != 0.0)) {
    if (AddCheckedInRun<kFmt>(data, n, squares, run->start(), prefetch_end,
                              status, out)) {
      run->CountChecked(1);
      return true;
    }
    *checked_failed = true;
  }
#endif
  // The planned sums need denormals honoured (the scope does that), not
  // clear flags; they round on purpose.
  status.Used();
  constexpr ExactFormat f = FormatOf<kFmt>();
  using U = BitsOf<kFmt>;
  const int k = squares ? 2 : 1;
  U largest, smallest_minus_one;
  MagnitudeRange(static_cast<const U*>(data), n, static_cast<U>(f.abs_mask),
                 prefetch_end, &largest, &smallest_minus_one);
  const ExactPlan plan = PlanExactSum(f, k, kExactBlockBits, largest,
                                      static_cast<U>(smallest_minus_one + 1));
  if (run != nullptr && largest < f.infinity && largest != 0) {
    run->set_start(TwoLevelStart(f, k, kExactBlockBits, largest));
  }
  if (plan.tier != ExactTier::kBins) {
    return AddPlanned<kFmt>(plan, data, n, squares, out);
  }
  if (largest >= f.infinity) return false;  // NaN or Inf: the bins sort it out
  // Too wide: the elements of the binades the two-level bound admits under
  // the largest are summed that way, the few below it one by one.
  const int top = std::max(static_cast<int>(largest >> f.exponent_shift), 1);
  const int lowest = top + f.significand_bits - (105 - 2 * kExactBlockBits) / k;
  if (lowest <= 1) return false;  // (the plan would have taken the block)
  const U threshold = static_cast<U>(U(lowest) << f.exponent_shift);
  const ExactPlan upper =
      PlanExactSum(f, k, kExactBlockBits, largest, threshold);
  if (upper.tier == ExactTier::kBins) return false;
  HWY_ALIGN U kept[kExactBlockElements];
  double outliers[kMaxOutliers];
  int count = 0;
  if (!SplitOutliers<kFmt>(static_cast<const U*>(data), n, threshold, kept,
                           outliers, &count)) {
    return false;
  }
  AddPlanned<kFmt>(upper, kept, n, squares, out);
  for (int i = 0; i < count; ++i) {
    squares ? out->AddSquare(outliers[i]) : out->AddAbs(outliers[i]);
  }
  return true;
}

// Checked sums that keep failing (blocks wider than they can sum) are
// paused for a number of batches that doubles each time, up to
// kMaxChecksPause, and a batch that fails while they are failing goes to the
// plan at once: gradients spanning 40 binades in every block otherwise pay
// for failed tries before every plan.
constexpr int kMaxChecksPause = 64;

// The blocks of a batch: checked together, else one by one; the blocks left
// as a mask.
template <Fmt kFmt>
uint32_t AddBlocks(const void* data, int64_t n, bool squares,
                   ExactBlockRun* run, ExactSum* out) {
  const int64_t blocks = (n + kExactBlockElements - 1) / kExactBlockElements;
  bool checked =
      GRADNORM_EXACT_CHECKED && run != nullptr && !run->ChecksPaused();
  const bool batch = checked && blocks > 1;
#if GRADNORM_EXACT_CHECKED
  if (batch) {
    if (AddBatchChecked<kFmt>(data, n, squares, run->start(), run->end(),
                              run->status(), out)) {
      run->ChecksHeld();
      run->CountChecked(blocks);
      return 0;
    }
    checked = !run->ChecksFailing();
  }
#endif
  uint32_t left = 0;
  int failed = 0;
  for (int64_t at = 0, b = 0; at < n; at += kExactBlockElements, ++b) {
    const void* block = static_cast<const BitsOf<kFmt>*>(data) + at;
    bool checked_failed = false;
    if (!AddBlock<kFmt>(block, std::min(kExactBlockElements, n - at), squares,
                        run, checked ? &checked_failed : nullptr, out)) {
      left |= uint32_t{1} << b;
    }
    failed += checked_failed;
  }
  if (batch) {
    // The batch failed, and then most of its blocks (or they were not tried
    // again): pause.
    !checked || 2 * failed > blocks ? run->ChecksFailed(kMaxChecksPause)
                                    : run->ChecksHeld();
  }
  return left;
}

uint32_t AddBlocksExactForTarget(DType dtype, const void* data, int64_t n,
                                 bool squares, ExactBlockRun* run,
                                 ExactSum* out) {
  switch (dtype) {
    case DType::kFloat32:
      return AddBlocks<Fmt::kFp32>(data, n, squares, run, out);
    case DType::kBFloat16:
      return AddBlocks<Fmt::kBf16>(data, n, squares, run, out);
    case DType::kFloat16:
      return AddBlocks<Fmt::kFp16>(data, n, squares, run, out);
    case DType::kFloat64:
      break;
  }
  return (uint32_t{1} << ((n + kExactBlockElements - 1) /
                          kExactBlockElements)) -
         1;  // every block left
}

bool ChecksAvailableForTarget() { return GRADNORM_EXACT_CHECKED != 0; }

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace kernels_internal
}  // namespace gradnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace gradnorm {
namespace kernels_internal {

HWY_EXPORT(AddBlocksExactForTarget);
HWY_EXPORT(ChecksAvailableForTarget);

bool ExactBlockChecksAvailable() {
  return HWY_DYNAMIC_DISPATCH(ChecksAvailableForTarget)();
}

uint32_t AddBlocksExact(DType dtype, const void* data, int64_t n, bool squares,
                        ExactBlockRun* run, ExactSum* out) {
  return HWY_DYNAMIC_DISPATCH(AddBlocksExactForTarget)(dtype, data, n, squares,
                                                       run, out);
}

bool AddBlockExact(DType dtype, const void* data, int64_t n, bool squares,
                   ExactBlockRun* run, ExactSum* out) {
  return AddBlocksExact(dtype, data, n, squares, run, out) == 0;
}

}  // namespace kernels_internal
}  // namespace gradnorm
#endif  // HWY_ONCE
