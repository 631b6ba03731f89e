// The clipping kernels: a piece of a tensor scaled in place, in its own dtype
// (bf16 and fp16 rounded to nearest even). Highway compiles the per-target
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
#define HWY_TARGET_INCLUDE "kernels/internal/scale_cpu.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/internal/widen16-inl.h"

HWY_BEFORE_NAMESPACE();
namespace gradnorm {
namespace kernels_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

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
  const auto is_nan = hn::RebindMask(du, abs_bits > hn::Set(di, 0x7f800000));
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
HWY_INLINE hn::Vec<hn::RebindToUnsigned<DF>> RoundToHalf(DF df, hn::Vec<DF> f) {
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
  const auto small_val =
      hn::Sub(hn::BitCast(du, hn::Add(hn::BitCast(df, u), hn::Set(df, 0.5f))),
              hn::Set(du, 0x3f000000u));
  const auto mant_odd = hn::And(hn::ShiftRight<13>(u), hn::Set(du, 1u));
  const auto normal_val = hn::ShiftRight<13>(
      hn::Add(u, hn::Add(hn::Set(du, 0xc8000fffu), mant_odd)));
  const auto out = hn::IfThenElse(big, big_val,
                                  hn::IfThenElse(small, small_val, normal_val));
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
    return pieces[i].numel * static_cast<int64_t>(ElementSize(pieces[i].dtype));
  }
};

// Scales pieces [begin, end) from the last one down, prefetching small ones
// ahead as ReduceTask does (a read prefetch: prefetches for writing go to L1,
// whose miss buffers limit them).
void ScaleTaskForTarget(const ScalePiece* pieces, size_t begin, size_t end,
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

HWY_EXPORT(ScaleTaskForTarget);

void ScaleTask(const ScalePiece* pieces, size_t begin, size_t end,
               double coef) {
  // Looked up per call, not cached: the first lookup yields a stub that
  // detects the CPU on every call.
  HWY_DYNAMIC_DISPATCH(ScaleTaskForTarget)(pieces, begin, end, coef);
}

}  // namespace kernels_internal
}  // namespace gradnorm
#endif  // HWY_ONCE
