#include "kernels/internal/exact_tile.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/exact_sum.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

std::vector<double> Reducible(std::vector<uint64_t> digits) {
  EXPECT_EQ(NormalizeDigits(digits.data()), 0u);
  std::vector<double> out(digits.begin(), digits.end());
  out.push_back(0.0);  // NaN count
  out.push_back(0.0);  // Inf count
  return out;
}

ExactSum FromDigits(const std::vector<uint64_t>& digits) {
  absl::StatusOr<ExactSum> sum = ExactSum::FromReduced(Reducible(digits));
  EXPECT_TRUE(sum.ok()) << sum.status();
  return sum.ok() ? *sum : ExactSum();
}

TEST(ExactTileTest, DigitsAreExactSumsDigits) {
  static_assert(kExactLowestExponent == ExactSum::kLowestExponent);
  static_assert(kExactDigits == ExactSum::kDigits);
  std::mt19937_64 random(3);
  std::vector<uint64_t> digits(kExactDigits);
  auto add = [&](int i, uint64_t v) { digits[i] += v; };
  ExactSum oracle;
  for (int i = 0; i < 5000; ++i) {
    const double x = std::ldexp(std::uniform_real_distribution<>(0, 1)(random),
                                static_cast<int>(random() % 2000) - 1070);
    AddDoubleToDigits(x, add);
    oracle.AddAbs(x);
    const uint64_t v = random();
    const int e = static_cast<int>(random() % 3000) - 2148;
    AddScaledToDigits(v, e, add);
    oracle.AddScaled(v, e);
  }
  AddDoubleToDigits(4.9406564584124654e-324, add);  // subnormal
  oracle.AddAbs(4.9406564584124654e-324);
  EXPECT_EQ(FromDigits(digits), oracle);
}

TEST(ExactTileTest, PlansByTheSpanOfExponents) {
  const uint32_t one = 0x3f800000u;  // fp32 1.0
  EXPECT_EQ(PlanExactSum(kExactFp32, 2, 8, 0, 0).tier, ExactTier::kZero);
  EXPECT_EQ(PlanExactSum(kExactFp32, 2, 8, 0x7f800000u, one).tier,
            ExactTier::kBins);
  EXPECT_EQ(PlanExactSum(kExactFp32, 1, 8, one, one).tier,
            ExactTier::kOneLevel);  // 8 + 24 <= 53
  const ExactPlan two = PlanExactSum(kExactFp32, 2, 8, one, one);
  EXPECT_EQ(two.tier, ExactTier::kTwoLevels);  // 8 + 48 > 53
  EXPECT_EQ(two.start, std::ldexp(1.0, 8 + 1 + 2 * (24 + 127 - 150)));
  EXPECT_EQ(two.unit, two.start * std::ldexp(1.0, -52));
  // 16 + 2 * (24 + D) <= 105: D <= 20.
  EXPECT_EQ(PlanExactSum(kExactFp32, 2, 8, one, one - (20u << 23)).tier,
            ExactTier::kTwoLevels);
  EXPECT_EQ(PlanExactSum(kExactFp32, 2, 8, one, one - (21u << 23)).tier,
            ExactTier::kBins);
}

// Bits of a 16- or 32-bit format and their exact fp64 values.
struct Element {
  uint32_t bits;
  double value;
};

Element Make(const ExactFormat& f, uint64_t significand, int exponent_field,
             bool negative) {
  const uint32_t fraction = static_cast<uint32_t>(significand) &
                            ((uint32_t{1} << (f.significand_bits - 1)) - 1);
  const uint32_t sign = f.abs_mask + 1;
  uint32_t bits =
      (static_cast<uint32_t>(exponent_field) << f.exponent_shift) | fraction;
  if (negative) bits |= sign;
  const uint64_t m =
      fraction |
      (exponent_field != 0 ? uint64_t{1} << (f.significand_bits - 1) : 0);
  const double value =
      std::ldexp(static_cast<double>(m),
                 (exponent_field > 1 ? exponent_field : 1) - f.bias);
  return {bits, negative ? -value : value};
}

// The GPU's algorithm for one chunk, emulated lane by lane on the CPU: groups
// of 256 elements, 8 per lane of 32, strided by 32; lane sums added in the
// butterfly order of warp shuffles; the bins path for groups it leaves.
std::vector<uint64_t> EmulatedChunk(const ExactFormat& f, int k,
                                    const std::vector<Element>& chunk) {
  std::vector<uint64_t> digits(kExactDigits);
  auto add = [&](int i, uint64_t v) { digits[i] += v; };
  std::vector<uint64_t> bins(256);
  for (size_t group = 0; group < chunk.size(); group += 256) {
    uint32_t largest = 0, smallest_minus_one = ~0u;
    double values[32][8];
    uint32_t bits[32][8];
    int counts[32] = {};
    for (int lane = 0; lane < 32; ++lane) {
      for (int j = 0; j < 8; ++j) {
        const size_t i = group + j * 32 + lane;
        if (i >= chunk.size()) break;
        bits[lane][counts[lane]] = chunk[i].bits;
        values[lane][counts[lane]++] = chunk[i].value;
        const uint32_t a = chunk[i].bits & f.abs_mask;
        largest = std::max(largest, a);
        smallest_minus_one = std::min(smallest_minus_one, a - 1);
      }
    }
    const ExactPlan plan =
        PlanExactSum(f, k, 8, largest, smallest_minus_one + 1);
    if (plan.tier == ExactTier::kZero) continue;
    if (plan.tier == ExactTier::kBins) {
      for (int lane = 0; lane < 32; ++lane) {
        for (int j = 0; j < counts[lane]; ++j) {
          int bin;
          uint64_t term;
          BinTerm(f, k, bits[lane][j], &bin, &term);
          bins[bin] += term;
        }
      }
      continue;
    }
    double high[32], low[32];
    for (int lane = 0; lane < 32; ++lane) {
      k == 2 ? LaneSums<2>(values[lane], counts[lane], plan, &high[lane],
                           &low[lane])
             : LaneSums<1>(values[lane], counts[lane], plan, &high[lane],
                           &low[lane]);
    }
    for (int offset = 16; offset > 0; offset /= 2) {
      for (int lane = 0; lane < offset; ++lane) {
        high[lane] += high[lane + offset];
        low[lane] += low[lane + offset];
      }
    }
    if (plan.tier == ExactTier::kTwoLevels) {
      MakeNonNegative(plan.unit, &high[0], &low[0]);
    }
    AddDoubleToDigits(high[0], add);
    AddDoubleToDigits(low[0], add);
  }
  for (int bin = 0; bin < 256; ++bin) AddBinToDigits(f, k, bin, bins[bin], add);
  return digits;
}

TEST(ExactTileTest, TheGpuAlgorithmEqualsTheOracle) {
  std::mt19937_64 random(5);
  const ExactFormat formats[] = {kExactFp32, kExactBf16, kExactFp16};
  for (const ExactFormat& f : formats) {
    const int max_field = static_cast<int>(f.infinity >> f.exponent_shift) - 1;
    for (int k : {1, 2}) {
      for (int span : {0, 3, 10, 20, 30, 60, 300}) {
        for (size_t n : {size_t{1}, size_t{255}, size_t{256}, size_t{5000}}) {
          std::vector<Element> chunk;
          ExactSum oracle;
          const int top = std::min(max_field, 130);
          for (size_t i = 0; i < n; ++i) {
            const int field =
                std::max(0, top - static_cast<int>(random() % (span + 1)));
            const Element e = i % 11 == 3 ? Make(f, 0, 0, i % 2)
                                          : Make(f, random(), field, i % 2);
            chunk.push_back(e);
            k == 2 ? oracle.AddSquare(e.value) : oracle.AddAbs(e.value);
          }
          SCOPED_TRACE(testing::Message()
                       << "bits " << f.significand_bits << " k " << k
                       << " span " << span << " n " << n);
          EXPECT_EQ(FromDigits(EmulatedChunk(f, k, chunk)), oracle);
        }
      }
    }
  }
}

}  // namespace
}  // namespace kernels_internal
}  // namespace gradnorm
