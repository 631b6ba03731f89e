// Scalar conversions between fp32 and the 16-bit gradient formats (bf16, fp16),
// shared by the SIMD tails, the CUDA kernels, the reference and the tests so
// all of them round the same way.
//
//   uint16_t h = gradnorm::half_internal::FloatToHalfBits(1.5f);   // 0x3e00
//   float f = gradnorm::half_internal::HalfBitsToFloat(h);          // 1.5f
//
// Narrowing rounds to nearest, ties to even; values beyond the format's range
// become +-Inf; NaN stays NaN (quieted). Widening is exact.
// Thread-safety: pure functions.
#ifndef GRADNORM_KERNELS_INTERNAL_HALF_H_
#define GRADNORM_KERNELS_INTERNAL_HALF_H_

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace gradnorm {
namespace half_internal {

GRADNORM_HOST_DEVICE inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

GRADNORM_HOST_DEVICE inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

GRADNORM_HOST_DEVICE inline float BFloat16BitsToFloat(uint16_t bits) {
  return BitsToFloat(static_cast<uint32_t>(bits) << 16);
}

GRADNORM_HOST_DEVICE inline uint16_t FloatToBFloat16Bits(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    // NaN: keep sign and payload top bits, force the quiet bit so truncation
    // cannot turn it into Inf.
    return static_cast<uint16_t>((u | 0x00400000u) >> 16);
  }
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even;
  // a carry out of the mantissa correctly bumps the exponent (up to Inf).
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

GRADNORM_HOST_DEVICE inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) {
    return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // Inf or NaN
  }
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24, exact in fp32.
    const float magnitude = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return BitsToFloat(sign | FloatBits(magnitude));
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

// The branches mirror the SIMD version in partial_norm_cpu.cc lane for lane.
GRADNORM_HOST_DEVICE inline uint16_t FloatToHalfBits(float f) {
  uint32_t u = FloatBits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t out;
  if (u >= 0x47800000u) {  // >= 65536 (rounds to Inf), Inf or NaN
    out = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // below 2^-14: subnormal or zero
    // Adding 0.5 lets the fp32 adder round the mantissa to nearest even at the
    // fp16 subnormal spacing 2^-24; the low bits are then the result.
    const float shifted = BitsToFloat(u) + 0.5f;
    out = FloatBits(shifted) - 0x3f000000u;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round
    out = u >> 13;
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

}  // namespace half_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_HALF_H_
