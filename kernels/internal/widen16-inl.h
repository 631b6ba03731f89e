// bf16 and fp16 lanes (as uint16_t bits) widened to fp32, for every SIMD
// target: the reduction kernels read 16-bit gradients with them, the clipping
// kernels scale them. A Highway per-target header: included after
// hwy/highway.h by files that foreach_target.h re-includes once per target.
//
//   const hn::ScalableTag<float> df;
//   hn::Vec<decltype(df)> f = WidenBFloat16(df, bits);

// Per-target include guard (Highway's convention).
#if defined(GRADNORM_KERNELS_INTERNAL_WIDEN16_INL_H_) == \
    defined(HWY_TARGET_TOGGLE)
#ifdef GRADNORM_KERNELS_INTERNAL_WIDEN16_INL_H_
#undef GRADNORM_KERNELS_INTERNAL_WIDEN16_INL_H_
#else
#define GRADNORM_KERNELS_INTERNAL_WIDEN16_INL_H_
#endif

#include <cstdint>

#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace gradnorm {
namespace kernels_internal {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// fp16 bits (u16 lanes) -> fp32. AVX2 and AVX-512 convert in hardware (F16C);
// Highway 1.0.3 emulates it on older targets but turns Inf and NaN into finite
// values there, so those targets use this exact integer version.
template <class DF>
HWY_INLINE hn::Vec<DF> WidenHalf(DF df, hn::Vec<hn::Rebind<uint16_t, DF>> h) {
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
  const auto inf_nan =
      hn::Or(hn::Set(du, 0x7f800000u), hn::ShiftLeft<13>(mant));
  const auto subnormal =
      hn::BitCast(du, hn::Mul(hn::ConvertTo(df, hn::BitCast(di, mant)),
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

// NOLINTNEXTLINE(google-readability-namespace-comments)
}  // namespace HWY_NAMESPACE
}  // namespace kernels_internal
}  // namespace gradnorm
HWY_AFTER_NAMESPACE();

#endif  // per-target include guard
