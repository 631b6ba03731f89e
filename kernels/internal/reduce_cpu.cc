// The reduction kernels: |x|, x*x, |x|^p or max |x| of a chunk, for each
// dtype, widened and accumulated with SIMD. Highway compiles the per-target
// section once per SIMD target (foreach_target.h re-includes this file).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/internal/cpu_prefetch.h"
#include "kernels/internal/cpu_tasks.h"
#include "kernels/internal/half.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/internal/reduce_cpu.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/internal/widen16-inl.h"

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
HWY_INLINE void AccumulateBlock(DA da, const T* HWY_RESTRICT p, hn::Vec<DA>& a0,
                                hn::Vec<DA>& a1) {
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
    a0 =
        Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::ShiftLeft<16>(u0))), a0);
    a1 = Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::And(u0, high_mask))),
                  a1);
    a0 =
        Op::Step(hn::PromoteTo(da, hn::BitCast(df, hn::ShiftLeft<16>(u1))), a0);
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
// memory speed (four leave fp32 measurably short of it).
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
                 std::is_same_v<T, float>)&&std::is_same_v<Acc, double>) {
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
// x86 max drops NaN); on recent x86 cores it streams faster than the
// integer form.
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
double MaxAbsChunk(const hwy::bfloat16_t* p, int64_t n, const void* end) {
  return half_internal::BFloat16BitsToFloat(
      static_cast<uint16_t>(MaxAbsBitsChunk<int16_t>(p, n, end)));
}
template <>
double MaxAbsChunk(const hwy::float16_t* p, int64_t n, const void* end) {
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
           c * chunk_elements * ElementSize(tensors[t].dtype);
  }
  int64_t numel() const {
    return std::min(chunk_elements, tensors[t].numel - c * chunk_elements);
  }
  int64_t bytes() const {
    return numel() * static_cast<int64_t>(ElementSize(tensors[t].dtype));
  }
  const void* tensor_end() const {
    return static_cast<const char*>(tensors[t].data) +
           tensors[t].numel * ElementSize(tensors[t].dtype);
  }
};

void ReduceTaskForTarget(const GradTensor* tensors, const TaskSpan& task,
                         int64_t chunk_elements, const ReduceSpec& spec,
                         double* out) {
  WithPrefetch(ChunkCursor{tensors, chunk_elements, task.tensor, task.chunk},
               task.count, [&](size_t k, const ChunkCursor& chunk) {
                 out[task.first_slot + k] =
                     ReduceOne(chunk.data(), chunk.numel(), chunk.tensor_end(),
                               tensors[chunk.t].dtype, spec);
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

HWY_EXPORT(ReduceTaskForTarget);

void ReduceTask(const GradTensor* tensors, const TaskSpan& task,
                int64_t chunk_elements, const ReduceSpec& spec, double* out) {
  // Looked up per call, not cached: the first lookup yields a stub that
  // detects the CPU on every call.
  HWY_DYNAMIC_DISPATCH(ReduceTaskForTarget)
  (tensors, task, chunk_elements, spec, out);
}

}  // namespace kernels_internal
}  // namespace gradnorm
#endif  // HWY_ONCE
