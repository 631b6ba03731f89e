// Highway compiles the per-target section below once per SIMD target
// (foreach_target.h re-includes this file); HWY_ONCE code is compiled once and
// picks the best target at run time with HWY_DYNAMIC_DISPATCH.
#include "kernels/internal/partial_norm_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "common/norm_math.h"
#include "absl/functional/function_ref.h"

#include "kernels/internal/half.h"
#include "kernels/internal/thread_pool.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/partial_norm_cpu.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace gradnorm {
namespace kernels_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// ---- Loads that widen Lanes(d) elements of any gradient dtype to d's type.

template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const double* HWY_RESTRICT p) {
  return hn::LoadU(d, p);
}

template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const float* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<hn::TFromD<D>, float>) {
    return hn::LoadU(d, p);
  } else {
    const hn::Rebind<float, D> df;
    return hn::PromoteTo(d, hn::LoadU(df, p));
  }
}

// fp16 bits (u16 lanes) -> fp32. AVX2 and AVX-512 convert in hardware (F16C);
// Highway 1.0.3 emulates it on older targets but turns Inf and NaN into finite
// values there, so those targets use this exact integer version.
template <class DF>
HWY_INLINE hn::Vec<DF> WidenHalf(DF df,
                                 hn::Vec<hn::Rebind<uint16_t, DF>> h) {
#if HWY_TARGET <= HWY_AVX2
  const hn::Rebind<hwy::float16_t, DF> df16;
  return hn::PromoteTo(df, hn::BitCast(df16, h));
#else
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto bits = hn::PromoteTo(du, h);
  const auto sign = hn::ShiftLeft<16>(hn::And(bits, hn::Set(du, 0x8000u)));
  const auto exp = hn::And(hn::ShiftRight<10>(bits), hn::Set(du, 0x1fu));
  const auto mant = hn::And(bits, hn::Set(du, 0x3ffu));
  const auto normal = hn::Or(hn::ShiftLeft<23>(hn::Add(exp, hn::Set(du, 112u))),
                             hn::ShiftLeft<13>(mant));
  const auto inf_nan = hn::Or(hn::Set(du, 0x7f800000u), hn::ShiftLeft<13>(mant));
  const auto subnormal = hn::BitCast(
      du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, mant)),
                  hn::Set(df, 5.9604644775390625e-8f)));
  const auto magnitude = hn::IfThenElse(
      exp == hn::Zero(du), subnormal,
      hn::IfThenElse(exp == hn::Set(du, 0x1fu), inf_nan, normal));
  return hn::BitCast(df, hn::Or(magnitude, sign));
#endif
}

template <class DF>
HWY_INLINE hn::Vec<DF> WidenBFloat16(DF df,
                                     hn::Vec<hn::Rebind<uint16_t, DF>> h) {
  const hn::RebindToUnsigned<DF> du;
  return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du, h)));
}

template <class D, typename T16>
HWY_INLINE hn::Vec<D> LoadAs16(D d, const T16* HWY_RESTRICT p) {
  const hn::Rebind<float, D> df;
  const hn::Rebind<uint16_t, D> du16;
  const auto h = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(p));
  hn::Vec<decltype(df)> f;
  if constexpr (std::is_same_v<T16, hwy::float16_t>) {
    f = WidenHalf(df, h);
  } else {
    f = WidenBFloat16(df, h);
  }
  if constexpr (std::is_same_v<hn::TFromD<D>, float>) {
    return f;
  } else {
    return hn::PromoteTo(d, f);
  }
}

template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const hwy::bfloat16_t* HWY_RESTRICT p) {
  return LoadAs16(d, p);
}

template <class D>
HWY_INLINE hn::Vec<D> LoadAs(D d, const hwy::float16_t* HWY_RESTRICT p) {
  return LoadAs16(d, p);
}

HWY_INLINE double ScalarToDouble(double x) { return x; }
HWY_INLINE double ScalarToDouble(float x) { return x; }
HWY_INLINE double ScalarToDouble(hwy::bfloat16_t x) {
  uint16_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return half_internal::BFloat16BitsToFloat(bits);
}
HWY_INLINE double ScalarToDouble(hwy::float16_t x) {
  uint16_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return half_internal::HalfBitsToFloat(bits);
}

// ---- Sums: |x| or x*x accumulated in Acc (double, or float on request).

struct SquareOp {
  template <class V>
  static HWY_INLINE V Step(V v, V acc) {
    return hn::MulAdd(v, v, acc);
  }
  template <typename A>
  static HWY_INLINE A Scalar(A x) {
    return x * x;
  }
};

struct AbsOp {
  template <class V>
  static HWY_INLINE V Step(V v, V acc) {
    return hn::Add(acc, hn::Abs(v));
  }
  template <typename A>
  static HWY_INLINE A Scalar(A x) {
    return std::fabs(x);
  }
};

// Software prefetch of a stream, kStreamPrefetchBytes ahead of the line being
// read, into L2. The hardware prefetcher alone keeps too few lines in flight
// for the fp64 loops (they issue loads more slowly than a plain sum does):
// they streamed at about 0.7 of the bandwidth probe, and at about 0.9 with
// this. Nothing past `end` (the end of the tensor) is prefetched, so small
// tensors do not pull in their neighbours' memory.
constexpr int64_t kStreamPrefetchBytes = int64_t{6} << 10;

HWY_INLINE void PrefetchAhead(const void* at, size_t bytes, const void* end) {
  const char* ahead = static_cast<const char*>(at) + kStreamPrefetchBytes;
  if (ahead >= static_cast<const char*>(end)) return;
  for (size_t off = 0; off < bytes; off += 64) {
    __builtin_prefetch(ahead + off, /*rw=*/0, /*locality=*/2);
  }
}

#if HWY_TARGET != HWY_SCALAR
// One full-width load of T, widened to as many Acc vectors as it takes (1, 2
// or 4) and folded into two accumulators. Full-width loads keep the loads per
// byte (and so the instructions in flight per byte of memory) as low as a
// plain sum's.
template <class DA, typename T>
HWY_INLINE size_t BlockElements(DA da) {
  return hn::Lanes(da) * sizeof(hn::TFromD<DA>) / sizeof(T);
}

template <class Op, class DA, typename T>
HWY_INLINE void AccumulateBlock(DA da, const T* HWY_RESTRICT p,
                                hn::Vec<DA>& a0, hn::Vec<DA>& a1) {
  using A = hn::TFromD<DA>;
  if constexpr (std::is_same_v<T, A>) {
    a0 = Op::Step(hn::LoadU(da, p), a0);
  } else if constexpr (std::is_same_v<T, float>) {  // fp32 into fp64
    // Two half-width loads that widen as they load (vcvtps2pd from memory):
    // fewer instructions than a full load plus an extract.
    const hn::Rebind<float, DA> dfh;
    a0 = Op::Step(hn::PromoteTo(da, hn::LoadU(dfh, p)), a0);
    a1 = Op::Step(hn::PromoteTo(da, hn::LoadU(dfh, p + hn::Lanes(da))), a1);
  } else if constexpr (std::is_same_v<T, hwy::bfloat16_t> &&
                       std::is_same_v<A, double>) {
    // bf16 into fp64, read as u32 pairs: the low bf16 of a pair is (u << 16)
    // as fp32 and the high one (u & 0xffff0000), with no widening shuffle.
    // Half-width loads make each fp32 vector widen to one full fp64 vector
    // without extracting halves; the shuffle ports were the bottleneck. The
    // per-element arithmetic (exact widening, one fp64 FMA) is unchanged; only
    // which accumulator lane an element lands in differs from the 16-bit path.
    const hn::Rebind<uint32_t, DA> du32;
    const hn::Rebind<float, DA> df;
    const auto high_mask = hn::Set(du32, 0xffff0000u);
    const uint32_t* HWY_RESTRICT q = reinterpret_cast<const uint32_t*>(p);
    const auto u0 = hn::LoadU(du32, q);
    const auto u1 = hn::LoadU(du32, q + hn::Lanes(da));
    a0 = Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::ShiftLeft<16>(u0))),
                  a0);
    a1 = Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::And(u0, high_mask))),
                  a1);
    a0 = Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::ShiftLeft<16>(u1))),
                  a0);
    a1 = Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::And(u1, high_mask))),
                  a1);
  } else {  // fp16 into fp32 or fp64, bf16 into fp32
    const hn::Repartition<uint16_t, DA> du16;
    const hn::Half<decltype(du16)> du16h;
    const hn::Rebind<float, decltype(du16h)> df;  // full fp32 width
    const auto h = hn::LoadU(du16, reinterpret_cast<const uint16_t*>(p));
    hn::Vec<decltype(df)> lo, hi;
    if constexpr (std::is_same_v<T, hwy::float16_t>) {
      lo = WidenHalf(df, hn::LowerHalf(du16h, h));
      hi = WidenHalf(df, hn::UpperHalf(du16h, h));
    } else {
      lo = WidenBFloat16(df, hn::LowerHalf(du16h, h));
      hi = WidenBFloat16(df, hn::UpperHalf(du16h, h));
    }
    if constexpr (std::is_same_v<A, float>) {
      a0 = Op::Step(lo, a0);
      a1 = Op::Step(hi, a1);
    } else {
      const hn::Half<decltype(df)> dfh;
      a0 = Op::Step(hn::PromoteTo(da, hn::LowerHalf(dfh, lo)), a0);
      a1 = Op::Step(hn::PromoteTo(da, hn::UpperHalf(dfh, lo)), a1);
      a0 = Op::Step(hn::PromoteTo(da, hn::LowerHalf(dfh, hi)), a0);
      a1 = Op::Step(hn::PromoteTo(da, hn::UpperHalf(dfh, hi)), a1);
    }
  }
}

// bf16 and fp32 widened into fp64: one widening and one fp64 FMA per 2 or 4
// bytes, two to four times a plain sum's arithmetic per byte. Eight
// accumulators keep the FMA chains short and enough loads in flight to run at
// memory speed (fp32 with four: about 0.9 of the bandwidth probe; eight: about
// 0.95).
template <class Op, typename T>
HWY_INLINE double SumWideningChunk(const T* HWY_RESTRICT p, int64_t n,
                                   const void* end) {
  const hn::ScalableTag<double> d;
  const int64_t block = static_cast<int64_t>(BlockElements<decltype(d), T>(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  auto a4 = hn::Zero(d), a5 = hn::Zero(d), a6 = hn::Zero(d), a7 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 4 * block <= n; i += 4 * block) {
    PrefetchAhead(p + i, 4 * block * sizeof(*p), end);
    AccumulateBlock<Op>(d, p + i, a0, a1);
    AccumulateBlock<Op>(d, p + i + block, a2, a3);
    AccumulateBlock<Op>(d, p + i + 2 * block, a4, a5);
    AccumulateBlock<Op>(d, p + i + 3 * block, a6, a7);
  }
  for (; i + block <= n; i += block) {
    AccumulateBlock<Op>(d, p + i, a0, a1);
  }
  a0 = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
               hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)));
  double sum = hn::GetLane(hn::SumOfLanes(d, a0));
  for (; i < n; ++i) sum += Op::Scalar(ScalarToDouble(p[i]));
  return sum;
}

template <typename Acc, class Op, typename T>
HWY_NOINLINE double SumChunk(const T* HWY_RESTRICT p, int64_t n,
                             const void* end) {
  if constexpr ((std::is_same_v<T, hwy::bfloat16_t> ||
                 std::is_same_v<T, float>) &&
                std::is_same_v<Acc, double>) {
    return SumWideningChunk<Op>(p, n, end);
  }
  const hn::ScalableTag<Acc> d;
  const int64_t block = static_cast<int64_t>(BlockElements<decltype(d), T>(d));
  // Four independent accumulators hide the FMA latency.
  auto a0 = hn::Zero(d);
  auto a1 = hn::Zero(d);
  auto a2 = hn::Zero(d);
  auto a3 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * block <= n; i += 2 * block) {
    PrefetchAhead(p + i, 2 * block * sizeof(T), end);
    AccumulateBlock<Op>(d, p + i, a0, a1);
    AccumulateBlock<Op>(d, p + i + block, a2, a3);
  }
  for (; i + block <= n; i += block) {
    AccumulateBlock<Op>(d, p + i, a0, a1);
  }
  a0 = hn::Add(hn::Add(a0, a1), hn::Add(a2, a3));
  Acc sum = hn::GetLane(hn::SumOfLanes(d, a0));
  for (; i < n; ++i) {
    sum += Op::Scalar(static_cast<Acc>(ScalarToDouble(p[i])));
  }
  return static_cast<double>(sum);
}
#else
template <typename Acc, class Op, typename T>
HWY_NOINLINE double SumChunk(const T* HWY_RESTRICT p, int64_t n,
                             const void* end) {
  (void)end;
  const hn::ScalableTag<Acc> d;
  auto a0 = hn::Zero(d);
  for (int64_t i = 0; i < n; ++i) a0 = Op::Step(LoadAs(d, p + i), a0);
  return static_cast<double>(hn::GetLane(a0));
}
#endif

// ---- Max |x|. bf16/fp16: over the sign-cleared bit patterns, which order
// like the magnitudes with every NaN above Inf above every finite value, so an
// integer max is exactly "NaN wins over Inf wins over the largest finite" and
// needs no widening.

template <typename TI, typename T>
HWY_NOINLINE TI MaxAbsBitsChunk(const T* HWY_RESTRICT p_raw, int64_t n,
                                const void* end) {
  const TI* HWY_RESTRICT p = reinterpret_cast<const TI*>(p_raw);
  const hn::ScalableTag<TI> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const TI mask = std::numeric_limits<TI>::max();  // all bits but the sign
  const auto vmask = hn::Set(d, mask);
  auto m0 = hn::Zero(d);
  auto m1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    PrefetchAhead(p + i, 2 * lanes * sizeof(TI), end);
    const auto v0 = hn::And(hn::LoadU(d, p + i), vmask);
    const auto v1 = hn::And(hn::LoadU(d, p + i + lanes), vmask);
    m0 = hn::Max(m0, v0);
    m1 = hn::Max(m1, v1);
  }
  for (; i + lanes <= n; i += lanes) {
    m0 = hn::Max(m0, hn::And(hn::LoadU(d, p + i), vmask));
  }
  m0 = hn::Max(m0, m1);
  TI best = hn::GetLane(hn::MaxOfLanes(d, m0));
  for (; i < n; ++i) {
    TI bits;
    std::memcpy(&bits, p + i, sizeof(bits));
    best = std::max<TI>(best, bits & mask);
  }
  return best;
}

template <typename T>
double MaxAbsChunk(const T* p, int64_t n, const void* end);

// fp32 and fp64: Max in the float domain, NaN tracked in a separate mask (an
// x86 max drops NaN). On Zen 4 this streams faster than the integer form.
template <typename T>
HWY_NOINLINE double MaxAbsFloatChunk(const T* HWY_RESTRICT p, int64_t n,
                                     const void* end) {
  const hn::ScalableTag<T> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto m0 = hn::Zero(d);
  auto m1 = hn::Zero(d);
  auto nan = hn::FirstN(d, 0);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    PrefetchAhead(p + i, 2 * lanes * sizeof(T), end);
    const auto v0 = hn::LoadU(d, p + i);
    const auto v1 = hn::LoadU(d, p + i + lanes);
    m0 = hn::Max(m0, hn::Abs(v0));
    m1 = hn::Max(m1, hn::Abs(v1));
    nan = hn::Or(nan, hn::Or(hn::IsNaN(v0), hn::IsNaN(v1)));
  }
  for (; i + lanes <= n; i += lanes) {
    const auto v0 = hn::LoadU(d, p + i);
    m0 = hn::Max(m0, hn::Abs(v0));
    nan = hn::Or(nan, hn::IsNaN(v0));
  }
  T best = hn::GetLane(hn::MaxOfLanes(d, hn::Max(m0, m1)));
  bool any_nan = !hn::AllFalse(d, nan);
  for (; i < n; ++i) {
    any_nan |= std::isnan(p[i]);
    best = std::max(best, std::fabs(p[i]));
  }
  return any_nan ? std::numeric_limits<double>::quiet_NaN()
                 : static_cast<double>(best);
}

template <>
double MaxAbsChunk(const float* p, int64_t n, const void* end) {
  return MaxAbsFloatChunk(p, n, end);
}
template <>
double MaxAbsChunk(const double* p, int64_t n, const void* end) {
  return MaxAbsFloatChunk(p, n, end);
}
template <>
double MaxAbsChunk(const hwy::bfloat16_t* p, int64_t n,
                   const void* end) {
  return half_internal::BFloat16BitsToFloat(
      static_cast<uint16_t>(MaxAbsBitsChunk<int16_t>(p, n, end)));
}
template <>
double MaxAbsChunk(const hwy::float16_t* p, int64_t n,
                   const void* end) {
  return half_internal::HalfBitsToFloat(
      static_cast<uint16_t>(MaxAbsBitsChunk<int16_t>(p, n, end)));
}

// ---- General p: no SIMD pow in Highway 1.0.3; std::pow on the widened value.

template <typename T>
HWY_NOINLINE double SumPowChunk(const T* HWY_RESTRICT p, int64_t n, double e) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    sum += std::pow(std::fabs(ScalarToDouble(p[i])), e);
  }
  return sum;
}

template <typename T>
double ReduceTyped(const T* p, int64_t n, const void* end,
                   const ReduceSpec& spec) {
  // fp32 accumulation is offered only for 32- and 16-bit inputs; fp64 inputs
  // always accumulate in fp64.
  if constexpr (!std::is_same_v<T, double>) {
    if (spec.fp32_accumulation) {
      if (spec.kind == NormKind::kSumSquares) {
        return SumChunk<float, SquareOp>(p, n, end);
      }
      if (spec.kind == NormKind::kSumAbs) {
        return SumChunk<float, AbsOp>(p, n, end);
      }
    }
  }
  switch (spec.kind) {
    case NormKind::kSumSquares:
      return SumChunk<double, SquareOp>(p, n, end);
    case NormKind::kSumAbs:
      return SumChunk<double, AbsOp>(p, n, end);
    case NormKind::kSumPow:
      return SumPowChunk(p, n, spec.p);
    case NormKind::kMaxAbs:
      return MaxAbsChunk(p, n, end);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

// `end`: the end of the tensor the chunk at `data` belongs to (the limit of
// prefetching ahead).
double ReduceOne(const void* data, int64_t n, const void* end, DType dtype,
                 const ReduceSpec& spec) {
  switch (dtype) {
    case DType::kFloat32:
      return ReduceTyped(static_cast<const float*>(data), n, end, spec);
    case DType::kFloat64:
      return ReduceTyped(static_cast<const double*>(data), n, end, spec);
    case DType::kBFloat16:
      return ReduceTyped(static_cast<const hwy::bfloat16_t*>(data), n, end,
                         spec);
    case DType::kFloat16:
      return ReduceTyped(static_cast<const hwy::float16_t*>(data), n, end,
                         spec);
  }
  return std::numeric_limits<double>::quiet_NaN();
}

size_t ElementBytes(DType dtype) {
  return dtype == DType::kFloat64 ? 8 : dtype == DType::kFloat32 ? 4 : 2;
}

// Gradients of a few KiB (biases, norms, small layers) are separate heap
// blocks of about a page each. The hardware prefetcher stops at page
// boundaries and needs several misses to start again on the next block, so a
// run of them streams at half the bandwidth of one large tensor. The kernels
// therefore prefetch, into L2, every line of the small blocks within
// kPrefetchWindowBytes after the one being worked on, which keeps several
// blocks' lines in flight. (Into L2: prefetches into L1 are limited by its
// few miss buffers, and measured slower than none.) Blocks larger than
// kPrefetchMaxBytes are streamed by the hardware prefetcher and only end the
// window.
constexpr int64_t kPrefetchWindowBytes = int64_t{16} << 10;
constexpr int64_t kPrefetchMaxBytes = int64_t{16} << 10;

HWY_INLINE void PrefetchLines(const void* data, int64_t bytes) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t end = begin + static_cast<uintptr_t>(bytes);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < end; line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line), /*rw=*/0,
                       /*locality=*/2);  // prefetcht1: into L2
  }
}

// Runs work(k, block) for the blocks k in [0, count) of a sequence, keeping
// the window after block k prefetched. `blocks` is a forward cursor at block
// 0: Settle() moves it onto the block it stands for, then data() and bytes()
// describe that block; Next() moves to the following one.
template <class Cursor, class Work>
HWY_INLINE void WithPrefetch(Cursor blocks, size_t count, const Work& work) {
  Cursor ahead = blocks;
  size_t next = 0;         // the first block not yet taken into the window
  int64_t in_window = 0;   // bytes of blocks k+1 .. next-1
  for (size_t k = 0; k < count; ++k) {
    blocks.Settle();
    if (next > k) {
      in_window -= blocks.bytes();
    } else {
      ++next;
      ahead.Next();
    }
    while (next < count && in_window < kPrefetchWindowBytes) {
      ahead.Settle();
      const int64_t bytes = ahead.bytes();
      if (bytes <= kPrefetchMaxBytes) PrefetchLines(ahead.data(), bytes);
      in_window += bytes;
      ++next;
      ahead.Next();
    }
    work(k, blocks);
    blocks.Next();
  }
}

// Walks a task's chunks in order: chunk `c` of tensors[t]; Settle() skips
// tensors with no elements.
struct ChunkCursor {
  const GradTensor* tensors;
  int64_t chunk_elements;
  size_t t;
  int64_t c;

  void Settle() {
    while (c * chunk_elements >= tensors[t].numel) {
      ++t;
      c = 0;
    }
  }
  void Next() {
    Settle();
    ++c;
  }
  const char* data() const {
    return static_cast<const char*>(tensors[t].data) +
           c * chunk_elements * ElementBytes(tensors[t].dtype);
  }
  int64_t numel() const {
    return std::min(chunk_elements, tensors[t].numel - c * chunk_elements);
  }
  int64_t bytes() const {
    return numel() * static_cast<int64_t>(ElementBytes(tensors[t].dtype));
  }
  const void* tensor_end() const {
    return static_cast<const char*>(tensors[t].data) +
           tensors[t].numel * ElementBytes(tensors[t].dtype);
  }
};

void ReduceTask(const GradTensor* tensors, const TaskSpan& task,
                int64_t chunk_elements, const ReduceSpec& spec, double* out) {
  WithPrefetch(ChunkCursor{tensors, chunk_elements, task.tensor, task.chunk},
               task.count, [&](size_t k, const ChunkCursor& chunk) {
                 out[task.first_slot + k] =
                     ReduceOne(chunk.data(), chunk.numel(), chunk.tensor_end(),
                               tensors[chunk.t].dtype, spec);
               });
}

// ---- In-place scaling.

template <typename T>
HWY_NOINLINE void ScaleFloat(T* HWY_RESTRICT p, int64_t n, T coef) {
  const hn::ScalableTag<T> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto c = hn::Set(d, coef);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    PrefetchAhead(p + i, 2 * lanes * sizeof(T), p + n);
    const auto v0 = hn::Mul(hn::LoadU(d, p + i), c);
    const auto v1 = hn::Mul(hn::LoadU(d, p + i + lanes), c);
    hn::StoreU(v0, d, p + i);
    hn::StoreU(v1, d, p + i + lanes);
  }
  for (; i + lanes <= n; i += lanes) {
    hn::StoreU(hn::Mul(hn::LoadU(d, p + i), c), d, p + i);
  }
  for (; i < n; ++i) p[i] *= coef;
}

// fp32 -> bf16 bits in the high half of u32 lanes (the low half is left
// over), round to nearest even; with the shift of RoundToBFloat16, lane for
// lane what half_internal::FloatToBFloat16Bits does.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> RoundToBFloat16High(
    DF /* df */, hn::Vec<DF> f) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto u = hn::BitCast(du, f);
  const auto abs_bits = hn::BitCast(di, hn::And(u, hn::Set(du, 0x7fffffffu)));
  const auto is_nan =
      hn::RebindMask(du, abs_bits > hn::Set(di, 0x7f800000));
  const auto lsb = hn::And(hn::ShiftRight<16>(u), hn::Set(du, 1u));
  const auto rounded = hn::Add(u, hn::Add(hn::Set(du, 0x7fffu), lsb));
  const auto quiet = hn::Or(u, hn::Set(du, 0x00400000u));
  return hn::IfThenElse(is_nan, quiet, rounded);
}

// fp32 -> bf16 bits (in the low half of u32 lanes).
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> RoundToBFloat16(DF df,
                                                            hn::Vec<DF> f) {
  return hn::ShiftRight<16>(RoundToBFloat16High(df, f));
}

// Scales the two bf16 values in each u32 lane (its low and its high half) and
// puts them back in place. As in the bf16 sums, a u32 pair widens to fp32
// with one shift or one mask, and narrows back with one shift or one mask:
// no widening and narrowing shuffles, and full-width loads and stores. With
// 16-bit lanes each vector moved half the bytes for more instructions, and
// too few cache lines were in flight to stream at memory speed.
template <class DU>
HWY_INLINE hn::Vec<DU> ScaleBFloat16Pairs(DU du, hn::Vec<DU> u,
                                          hn::Vec<hn::RebindToFloat<DU>> c) {
  const hn::RebindToFloat<DU> df;
  const auto high = hn::Set(du, 0xffff0000u);
  const auto lo = RoundToBFloat16High(
      df, hn::Mul(hn::BitCast(df, hn::ShiftLeft<16>(u)), c));
  const auto hi =
      RoundToBFloat16High(df, hn::Mul(hn::BitCast(df, hn::And(u, high)), c));
  return hn::Or(hn::ShiftRight<16>(lo), hn::And(hi, high));
}

// fp32 -> fp16 bits, round to nearest even; lane for lane what
// half_internal::FloatToHalfBits does.
template <class DF>
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> RoundToHalf(DF df,
                                                        hn::Vec<DF> f) {
  const hn::RebindToUnsigned<DF> du;
  const hn::RebindToSigned<DF> di;
  const auto bits = hn::BitCast(du, f);
  const auto sign = hn::And(bits, hn::Set(du, 0x80000000u));
  const auto u = hn::Xor(bits, sign);
  const auto ui = hn::BitCast(di, u);
  const auto big = hn::RebindMask(du, ui > hn::Set(di, 0x477fffff));
  const auto nan = hn::RebindMask(du, ui > hn::Set(di, 0x7f800000));
  const auto small = hn::RebindMask(du, ui < hn::Set(di, 0x38800000));
  const auto big_val =
      hn::IfThenElse(nan, hn::Set(du, 0x7e00u), hn::Set(du, 0x7c00u));
  const auto small_val = hn::Sub(
      hn::BitCast(du, hn::Add(hn::BitCast(df, u), hn::Set(df, 0.5f))),
      hn::Set(du, 0x3f000000u));
  const auto mant_odd = hn::And(hn::ShiftRight<13>(u), hn::Set(du, 1u));
  const auto normal_val = hn::ShiftRight<13>(
      hn::Add(u, hn::Add(hn::Set(du, 0xc8000fffu), mant_odd)));
  const auto out =
      hn::IfThenElse(big, big_val, hn::IfThenElse(small, small_val, normal_val));
  return hn::Or(out, hn::ShiftRight<16>(sign));
}

template <bool kIsBFloat16>
HWY_NOINLINE void Scale16(uint16_t* HWY_RESTRICT p, int64_t n, float coef) {
  const hn::ScalableTag<float> df;
  const hn::RebindToUnsigned<decltype(df)> du32;
  const hn::RebindToSigned<decltype(df)> di32;
  const hn::Rebind<uint16_t, decltype(df)> du16;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(df));
  const auto c = hn::Set(df, coef);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    hn::Vec<decltype(du32)> out;
    const auto h = hn::LoadU(du16, p + i);
    if constexpr (kIsBFloat16) {
      out = RoundToBFloat16(df, hn::Mul(WidenBFloat16(df, h), c));
    } else {
      out = RoundToHalf(df, hn::Mul(WidenHalf(df, h), c));
    }
    hn::StoreU(hn::DemoteTo(du16, hn::BitCast(di32, out)), du16, p + i);
  }
  for (; i < n; ++i) {
    if constexpr (kIsBFloat16) {
      p[i] = half_internal::FloatToBFloat16Bits(
          half_internal::BFloat16BitsToFloat(p[i]) * coef);
    } else {
      p[i] = half_internal::FloatToHalfBits(
          half_internal::HalfBitsToFloat(p[i]) * coef);
    }
  }
}

HWY_NOINLINE void ScaleBFloat16(uint16_t* HWY_RESTRICT p, int64_t n,
                                float coef) {
  const hn::ScalableTag<uint32_t> du;
  const hn::RebindToFloat<decltype(du)> df;
  const int64_t block = 2 * static_cast<int64_t>(hn::Lanes(du));  // bf16s
  const auto c = hn::Set(df, coef);
  int64_t i = 0;
  for (; i + 2 * block <= n; i += 2 * block) {
    PrefetchAhead(p + i, 2 * block * sizeof(*p), p + n);
    uint32_t* HWY_RESTRICT q0 = reinterpret_cast<uint32_t*>(p + i);
    uint32_t* HWY_RESTRICT q1 = reinterpret_cast<uint32_t*>(p + i + block);
    const auto u0 = hn::LoadU(du, q0);
    const auto u1 = hn::LoadU(du, q1);
    hn::StoreU(ScaleBFloat16Pairs(du, u0, c), du, q0);
    hn::StoreU(ScaleBFloat16Pairs(du, u1, c), du, q1);
  }
  for (; i + block <= n; i += block) {
    uint32_t* HWY_RESTRICT q = reinterpret_cast<uint32_t*>(p + i);
    hn::StoreU(ScaleBFloat16Pairs(du, hn::LoadU(du, q), c), du, q);
  }
  Scale16<true>(p + i, n - i, coef);
}

void ScaleRange(void* data, DType dtype, int64_t n, double coef) {
  const float coef32 = static_cast<float>(coef);
  switch (dtype) {
    case DType::kFloat32:
      ScaleFloat(static_cast<float*>(data), n, coef32);
      break;
    case DType::kFloat64:
      ScaleFloat(static_cast<double*>(data), n, coef);
      break;
    case DType::kBFloat16:
      ScaleBFloat16(static_cast<uint16_t*>(data), n, coef32);
      break;
    case DType::kFloat16:
      Scale16<false>(static_cast<uint16_t*>(data), n, coef32);
      break;
  }
}

// Walks pieces[i] from the last one down (i wraps after piece 0, unused).
struct PieceCursor {
  const ScalePiece* pieces;
  size_t i;

  void Settle() {}
  void Next() { --i; }
  const void* data() const { return pieces[i].data; }
  int64_t bytes() const {
    return pieces[i].numel *
           static_cast<int64_t>(ElementBytes(pieces[i].dtype));
  }
};

// Scales pieces [begin, end) from the last one down, prefetching small ones
// ahead as ReduceTask does (a read prefetch: prefetches for writing go to L1,
// whose miss buffers limit them).
void ScaleTask(const ScalePiece* pieces, size_t begin, size_t end,
               double coef) {
  if (begin == end) return;
  WithPrefetch(PieceCursor{pieces, end - 1}, end - begin,
               [coef](size_t, const PieceCursor& cursor) {
                 const ScalePiece& piece = cursor.pieces[cursor.i];
                 ScaleRange(piece.data, piece.dtype, piece.numel, coef);
               });
}

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace kernels_internal
}  // namespace gradnorm
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace gradnorm {
namespace kernels_internal {

HWY_EXPORT(ReduceTask);
HWY_EXPORT(ScaleTask);

namespace {

// Elements handed to a thread at a time: about eight tasks per thread for
// balance, within bounds that amortize claiming a task (an atomic increment on
// a shared line) and restarting the hardware prefetcher on a new region. Task
// boundaries never change results: every chunk writes its own slot.
constexpr int64_t kMinTaskElements = int64_t{1} << 16;
constexpr int64_t kMaxTaskElements = int64_t{1} << 20;

int64_t TaskElements(int64_t total_elements, int parallelism) {
  return std::clamp<int64_t>(total_elements / (int64_t{8} * parallelism),
                             kMinTaskElements, kMaxTaskElements);
}
// Below this many elements one thread is faster than waking others.
constexpr int64_t kSerialElements = int64_t{1} << 15;
// Elements per scaling work item (scaling has no combine step to keep fixed).
constexpr int64_t kScaleElements = int64_t{1} << 16;

int Parallelism(int requested, int64_t total_elements) {
  if (total_elements < kSerialElements) return 1;
  return requested > 0 ? requested : ThreadPool::HardwareThreads();
}

// Callers have validated the dtype.
size_t ElementSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
      return 8;
    case DType::kFloat32:
      return 4;
    case DType::kBFloat16:
    case DType::kFloat16:
      return 2;
  }
  return 0;
}

// Runs fn over [0, num_tasks): on the caller's executor when one is given and
// there is more than one thread's work, else on the default pool (which runs a
// single thread's work inline). Each task writes its own slots, so who runs it
// never matters.
void RunTasks(int64_t num_tasks, int parallelism,
              const CpuParallelFor* parallel_for,
              absl::FunctionRef<void(int64_t)> fn) {
  if (parallel_for != nullptr && *parallel_for && parallelism > 1 &&
      num_tasks > 1) {
    (*parallel_for)(num_tasks, std::function<void(int64_t)>(fn));
    return;
  }
  ThreadPool::Default().ParallelFor(num_tasks, parallelism, fn);
}

struct Scratch {
  std::vector<size_t> first_chunk;
  std::vector<TaskSpan> tasks;
  std::vector<double> chunk_value;
};

// Re-scan of a chunk whose sum came out non-finite: were there NaN/Inf inputs,
// or did large finite inputs overflow the accumulator (fp64 gradients, large p,
// fp32 accumulation)?
bool AnyNonFinite(const GradTensor& g, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    switch (g.dtype) {
      case DType::kFloat32:
        if (!std::isfinite(static_cast<const float*>(g.data)[i])) return true;
        break;
      case DType::kFloat64:
        if (!std::isfinite(static_cast<const double*>(g.data)[i])) return true;
        break;
      case DType::kBFloat16:
        if ((static_cast<const uint16_t*>(g.data)[i] & 0x7fff) >= 0x7f80) {
          return true;
        }
        break;
      case DType::kFloat16:
        if ((static_cast<const uint16_t*>(g.data)[i] & 0x7fff) >= 0x7c00) {
          return true;
        }
        break;
    }
  }
  return false;
}

NormKind KindFor(double p) {
  if (p == 1.0) return NormKind::kSumAbs;
  if (p == 2.0) return NormKind::kSumSquares;
  if (std::isinf(p)) return NormKind::kMaxAbs;
  return NormKind::kSumPow;
}

}  // namespace

NormResult ComputePartialNormCpu(absl::Span<const GradTensor> tensors, double p,
                                 const CpuNormOptions& options) {
  // Capped so chunk offsets cannot overflow; no tensor is that large.
  const int64_t chunk_elements =
      options.chunk_elements > 0
          ? std::min<int64_t>(options.chunk_elements, int64_t{1} << 48)
          : kDefaultChunkElements;
  const ReduceSpec spec{KindFor(p), p, options.fp32_accumulation};

  // Per-thread scratch, reused across calls: at 10,000 tensors these arrays
  // are hundreds of KiB, and fresh allocations would page-fault on every call.
  thread_local Scratch scratch;
  std::vector<size_t>& first_chunk = scratch.first_chunk;
  std::vector<TaskSpan>& tasks = scratch.tasks;
  std::vector<double>& chunk_value = scratch.chunk_value;
  first_chunk.resize(tensors.size() + 1);
  tasks.clear();

  int64_t total_elements = 0;
  for (const GradTensor& g : tensors) total_elements += g.numel;
  const int parallelism = Parallelism(options.num_threads, total_elements);
  const int64_t task_elements = TaskElements(total_elements, parallelism);

  // One pass over the tensors numbers the chunks (slot = global chunk index)
  // and cuts them into tasks of about task_elements. How chunks are grouped
  // into tasks never changes the result: each chunk writes its own slot.
  size_t slot = 0;
  int64_t pending = task_elements;
  for (size_t t = 0; t < tensors.size(); ++t) {
    first_chunk[t] = slot;
    const int64_t numel = tensors[t].numel;
    for (int64_t c = 0; c * chunk_elements < numel; ++c, ++slot) {
      if (pending >= task_elements) {
        tasks.push_back(TaskSpan{t, c, slot, 0});
        pending = 0;
      }
      ++tasks.back().count;
      pending += std::min(chunk_elements, numel - c * chunk_elements);
    }
  }
  first_chunk[tensors.size()] = slot;
  chunk_value.resize(slot);

  // HWY_DYNAMIC_DISPATCH is looked up per task, not cached: the first lookup
  // yields a stub that detects the CPU on every call.
  RunTasks(
      static_cast<int64_t>(tasks.size()), parallelism, options.parallel_for,
      [&](int64_t task) {
        HWY_DYNAMIC_DISPATCH(ReduceTask)(tensors.data(), tasks[task],
                                         chunk_elements, spec,
                                         chunk_value.data());
      });

  // Fixed combine order: chunks of a tensor in order, then tensors in order.
  NormResult result;
  if (options.per_tensor) result.per_tensor.resize(tensors.size());
  const bool is_max = spec.kind == NormKind::kMaxAbs;
  for (size_t t = 0; t < tensors.size(); ++t) {
    double value = 0.0;
    for (size_t c = first_chunk[t]; c < first_chunk[t + 1]; ++c) {
      const double v = chunk_value[c];
      value = is_max ? NanMax(value, v) : value + v;
      if (!std::isfinite(v) && !result.nonfinite) {
        const int64_t begin =
            static_cast<int64_t>(c - first_chunk[t]) * chunk_elements;
        const int64_t end = std::min(begin + chunk_elements, tensors[t].numel);
        result.nonfinite = is_max || AnyNonFinite(tensors[t], begin, end);
      }
    }
    if (options.per_tensor) result.per_tensor[t] = value;
    result.value = is_max ? NanMax(result.value, value) : result.value + value;
  }
  if (chunk_value.capacity() > (size_t{1} << 20)) scratch = Scratch();  // cap
  return result;
}

void ScaleInPlaceCpu(absl::Span<const GradTensor> tensors, double coef,
                     int num_threads, const CpuParallelFor* parallel_for) {
  std::vector<ScalePiece> pieces;
  int64_t total_elements = 0;
  for (const GradTensor& g : tensors) {
    char* base = static_cast<char*>(g.data);
    const size_t size = ElementSize(g.dtype);
    for (int64_t off = 0; off < g.numel; off += kScaleElements) {
      pieces.push_back(ScalePiece{base + off * size,
                                  std::min(kScaleElements, g.numel - off),
                                  g.dtype});
    }
    total_elements += g.numel;
  }
  if (coef > std::numeric_limits<float>::max()) {
    // Beyond fp32 the coefficient cannot be a float operand; form the products
    // in fp64 (a path no clipping coefficient, always < 1, takes).
    for (const ScalePiece& piece : pieces) {
      for (int64_t i = 0; i < piece.numel; ++i) {
        switch (piece.dtype) {
          case DType::kFloat32: {
            float* x = static_cast<float*>(piece.data) + i;
            *x = static_cast<float>(*x * coef);
            break;
          }
          case DType::kFloat64:
            static_cast<double*>(piece.data)[i] *= coef;
            break;
          case DType::kBFloat16: {
            uint16_t* x = static_cast<uint16_t*>(piece.data) + i;
            *x = half_internal::FloatToBFloat16Bits(static_cast<float>(
                half_internal::BFloat16BitsToFloat(*x) * coef));
            break;
          }
          case DType::kFloat16: {
            uint16_t* x = static_cast<uint16_t*>(piece.data) + i;
            *x = half_internal::FloatToHalfBits(static_cast<float>(
                half_internal::HalfBitsToFloat(*x) * coef));
            break;
          }
        }
      }
    }
    return;
  }
  // Consecutive pieces form one task, as for the norm: thousands of small
  // tensors would otherwise cost an atomic claim each.
  const int parallelism = Parallelism(num_threads, total_elements);
  const int64_t task_elements = TaskElements(total_elements, parallelism);
  std::vector<size_t> task_begin;
  int64_t pending = task_elements;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pending >= task_elements) {
      task_begin.push_back(i);
      pending = 0;
    }
    pending += pieces[i].numel;
  }
  task_begin.push_back(pieces.size());
  // Last tensor first: clipping follows the norm pass, which read the tensors
  // first to last, so the last ones read are the ones still in cache; going
  // forward would evict them before reaching them.
  const int64_t num_tasks = static_cast<int64_t>(task_begin.size()) - 1;
  RunTasks(num_tasks, parallelism, parallel_for, [&](int64_t i) {
    const int64_t task = num_tasks - 1 - i;
    HWY_DYNAMIC_DISPATCH(ScaleTask)
    (pieces.data(), task_begin[task], task_begin[task + 1], coef);
  });
}

}  // namespace kernels_internal
}  // namespace gradnorm
#endif  // HWY_ONCE
