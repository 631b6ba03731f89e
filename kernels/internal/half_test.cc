#include "kernels/internal/half.h"

#include <cmath>
#include <cstdint>
#include <random>

#include "gtest/gtest.h"

namespace gradnorm {
namespace half_internal {
namespace {

bool IsNanHalf(uint16_t h) { return (h & 0x7fff) > 0x7c00; }
bool IsNanBf16(uint16_t h) { return (h & 0x7fff) > 0x7f80; }

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalfBits(1.5f), 0x3e00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65519.99f), 0x7bff);  // below the halfway point
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);   // tie rounds to even: Inf
  EXPECT_EQ(FloatToHalfBits(1e10f), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(-INFINITY), 0xfc00);
  EXPECT_EQ(FloatToHalfBits(5.9604644775390625e-8f), 0x0001);   // 2^-24
  EXPECT_EQ(FloatToHalfBits(2.98023223876953125e-8f), 0x0000);  // tie to 0
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
  EXPECT_TRUE(IsNanHalf(FloatToHalfBits(NAN)));
  EXPECT_EQ(HalfBitsToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfBitsToFloat(0x0001), 5.9604644775390625e-8f);
  EXPECT_TRUE(std::isinf(HalfBitsToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(0x7e00)));

  EXPECT_EQ(FloatToBFloat16Bits(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16Bits(1.00390625f), 0x3f80);  // tie: stays even
  EXPECT_EQ(FloatToBFloat16Bits(1.01171875f), 0x3f82);  // tie: up to even
  EXPECT_EQ(FloatToBFloat16Bits(3.4e38f), 0x7f80);      // rounds past max
  EXPECT_TRUE(IsNanBf16(FloatToBFloat16Bits(NAN)));
  // A NaN whose payload lies only in the low 16 bits must stay NaN.
  EXPECT_TRUE(IsNanBf16(FloatToBFloat16Bits(BitsToFloat(0x7f800001u))));
  EXPECT_EQ(BFloat16BitsToFloat(0x4040), 3.0f);
}

TEST(HalfTest, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const uint16_t back = FloatToHalfBits(HalfBitsToFloat(bits));
    if (IsNanHalf(bits)) {
      EXPECT_TRUE(IsNanHalf(back)) << h;
    } else {
      EXPECT_EQ(back, bits) << h;
    }
  }
}

TEST(HalfTest, EveryBFloat16RoundTrips) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const uint16_t back = FloatToBFloat16Bits(BFloat16BitsToFloat(bits));
    if (IsNanBf16(bits)) {
      EXPECT_TRUE(IsNanBf16(back)) << h;
    } else {
      EXPECT_EQ(back, bits) << h;
    }
  }
}

// Rounds to nearest, ties to even: the result is at least as close as both
// neighbours, and on a tie its last bit is 0.
template <typename Narrow, typename Widen>
void CheckNearestEven(float f, Narrow narrow, Widen widen, uint16_t inf_bits) {
  const uint16_t h = narrow(f);
  const uint16_t mag = h & 0x7fff;
  if (mag >= inf_bits) {
    // Only values at or past the halfway point above the largest finite value
    // may round to Inf.
    const double max = widen(static_cast<uint16_t>(inf_bits - 1));
    const double next = 2 * max - widen(static_cast<uint16_t>(inf_bits - 2));
    EXPECT_GE(std::fabs(static_cast<double>(f)), (max + next) / 2) << f;
    return;
  }
  const double x = std::fabs(static_cast<double>(f));
  const double err = std::fabs(x - widen(mag));
  const double up = std::fabs(x - widen(static_cast<uint16_t>(mag + 1)));
  EXPECT_LE(err, up) << f;
  if (mag > 0) {
    const double down = std::fabs(x - widen(static_cast<uint16_t>(mag - 1)));
    EXPECT_LE(err, down) << f;
    if (err == down) {
      EXPECT_EQ(mag & 1, 0) << f;
    }
  }
  if (err == up) {
    EXPECT_EQ(mag & 1, 0) << f;
  }
}

TEST(HalfTest, RandomFloatsRoundToNearestEven) {
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) {
    // Random bit patterns over the exponents the formats can reach.
    const uint32_t u = rng();
    const float f = BitsToFloat(u);
    if (std::isnan(f)) continue;
    const uint32_t exp = (u >> 23) & 0xff;
    if (exp >= 100 && exp <= 145) {
      CheckNearestEven(f, FloatToHalfBits, HalfBitsToFloat, 0x7c00);
    }
    CheckNearestEven(f, FloatToBFloat16Bits, BFloat16BitsToFloat, 0x7f80);
  }
}

}  // namespace
}  // namespace half_internal
}  // namespace gradnorm
