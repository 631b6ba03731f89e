#include "common/exact_sum.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

using ::testing::HasSubstr;

constexpr double kMax = std::numeric_limits<double>::max();
constexpr double kMinSubnormal = std::numeric_limits<double>::denorm_min();

TEST(ExactSumTest, SmallSumsAreExact) {
  ExactSum s;
  s.AddSquare(3.0);
  s.AddSquare(-4.0);
  EXPECT_EQ(s.RoundToDouble(), 25.0);
  ExactSum a;
  a.AddAbs(-2.5);
  a.AddAbs(0.25);
  EXPECT_EQ(a.RoundToDouble(), 2.75);
  EXPECT_EQ(ExactSum().RoundToDouble(), 0.0);
  EXPECT_TRUE(ExactSum().is_zero());
}

TEST(ExactSumTest, RoundsToNearestWithTiesToEven) {
  auto sum = [](std::vector<std::pair<uint64_t, int>> terms) {
    ExactSum s;
    for (auto [m, e] : terms) s.AddScaled(m, e);
    return s.RoundToDouble();
  };
  // 1 + 2^-53: halfway, to the even 1.
  EXPECT_EQ(sum({{1, 0}, {1, -53}}), 1.0);
  // Just above halfway: up.
  EXPECT_EQ(sum({{1, 0}, {1, -53}, {1, -1000}}), 1.0 + std::ldexp(1, -52));
  // (1 + 2^-52) + 2^-53: halfway from an odd significand: up.
  EXPECT_EQ(sum({{1, 0}, {1, -52}, {1, -53}}), 1.0 + std::ldexp(1, -51));
  // Below the subnormals: half of 2^-1074 ties to 0, three quarters rounds up.
  EXPECT_EQ(sum({{1, -1075}}), 0.0);
  EXPECT_EQ(sum({{3, -1076}}), kMinSubnormal);
  EXPECT_EQ(sum({{1, -2148}}), 0.0);
  // A subnormal result keeps its bits down to 2^-1074 exactly.
  EXPECT_EQ(sum({{5, -1074}}), 5 * kMinSubnormal);
  // Past the fp64 range: +Inf; just below the rounding boundary: DBL_MAX.
  ExactSum big;
  big.AddAbs(kMax);
  big.AddAbs(kMax);
  EXPECT_EQ(big.RoundToDouble(), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(big.finite());  // The sum itself is finite and exact.
  ExactSum near_max;
  near_max.AddAbs(kMax);
  near_max.AddAbs(std::ldexp(1.0, 969) * 0.99);  // Below half an ulp.
  EXPECT_EQ(near_max.RoundToDouble(), kMax);
}

TEST(ExactSumTest, SquaresOfExtremesAreExact) {
  ExactSum s;
  s.AddSquare(kMinSubnormal);  // 2^-2148, the lowest bit.
  s.AddSquare(1e-300);
  EXPECT_FALSE(s.is_zero());
  EXPECT_EQ(s.RoundToDouble(), 0.0);  // Far below fp64, but kept.
  ExactSum t = s;
  t.AddSquare(1.0);
  EXPECT_EQ(t.RoundToDouble(), 1.0);
  EXPECT_NE(t.Encode(), [] {
    ExactSum one;
    one.AddSquare(1.0);
    return one.Encode();
  }());
  ExactSum huge;
  huge.AddSquare(kMax);  // ~2^2048: only its rounding overflows.
  huge.AddSquare(kMax);
  EXPECT_EQ(huge.RoundToDouble(), std::numeric_limits<double>::infinity());
  // A fp64 square needs 106 bits: (1 + 2^-52)^2 = 1 + 2^-51 + 2^-104.
  ExactSum wide;
  wide.AddSquare(1.0 + std::ldexp(1, -52));
  wide.AddScaled(1, -104);  // 1 + 2^-51 + 2^-103 now.
  ExactSum expected;
  expected.AddScaled(1, 0);
  expected.AddScaled(1, -51);
  expected.AddScaled(1, -103);
  EXPECT_EQ(wide, expected);
}

TEST(ExactSumTest, CarriesPropagateOverManyTerms) {
  ExactSum s;
  const uint64_t digit = 0xffffffffu;
  for (int i = 0; i < 1'000'000; ++i) s.AddScaled(digit, 16);
  EXPECT_EQ(s.RoundToDouble(), std::ldexp(1e6 * digit, 16));
}

TEST(ExactSumTest, NaNWinsOverInf) {
  ExactSum s;
  s.AddAbs(1.0);
  s.AddAbs(std::numeric_limits<double>::infinity());
  EXPECT_TRUE(s.is_inf());
  EXPECT_EQ(s.RoundToDouble(), std::numeric_limits<double>::infinity());
  ExactSum n;
  n.AddSquare(std::nan(""));
  s.Merge(n);
  EXPECT_TRUE(s.is_nan());
  EXPECT_FALSE(s.is_inf());
  EXPECT_TRUE(std::isnan(s.RoundToDouble()));
}

// Terms spread over the whole range, from subnormals to near DBL_MAX.
std::vector<double> RandomTerms(std::mt19937_64& random, int n) {
  std::vector<double> terms;
  std::uniform_int_distribution<int> exponent(-1074, 1000);
  std::uniform_real_distribution<double> mantissa(1.0, 2.0);
  for (int i = 0; i < n; ++i) {
    const double m = mantissa(random);
    terms.push_back(std::ldexp(m, exponent(random)) * (i % 3 == 0 ? -1 : 1));
  }
  return terms;
}

TEST(ExactSumTest, AnyOrderAndGroupingGivesTheSameBits) {
  std::mt19937_64 random(17);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> terms = RandomTerms(random, 2000);
    // Also clustered terms, where rounding in fp64 would show.
    for (int i = 0; i < 500; ++i) terms.push_back(1.0 + i * 1e-17);
    ExactSum whole_abs, whole_sq;
    for (double t : terms) {
      whole_abs.AddAbs(t);
      whole_sq.AddSquare(t);
    }
    std::shuffle(terms.begin(), terms.end(), random);
    // Random groups, merged in random order.
    std::vector<ExactSum> abs_groups(7), sq_groups(7);
    std::uniform_int_distribution<int> group(0, 6);
    for (double t : terms) {
      const int g = group(random);
      abs_groups[g].AddAbs(t);
      sq_groups[g].AddSquare(t);
    }
    std::shuffle(abs_groups.begin(), abs_groups.end(), random);
    ExactSum merged_abs, merged_sq;
    for (const ExactSum& g : abs_groups) merged_abs.Merge(g);
    for (const ExactSum& g : sq_groups) merged_sq.Merge(g);
    EXPECT_EQ(merged_abs.Encode(), whole_abs.Encode());
    EXPECT_EQ(merged_sq.Encode(), whole_sq.Encode());
    EXPECT_EQ(merged_abs.RoundToDouble(), whole_abs.RoundToDouble());
  }
}

TEST(ExactSumTest, RoundedSumMatchesALongDoubleSumClosely) {
  std::mt19937_64 random(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  ExactSum s;
  long double reference = 0;
  for (int i = 0; i < 100'000; ++i) {
    const float g = normal(random);
    s.AddSquare(g);
    reference += static_cast<long double>(g) * g;
  }
  EXPECT_NEAR(s.RoundToDouble(), static_cast<double>(reference),
              1e-15 * static_cast<double>(reference));
}

TEST(ExactSumTest, EncodeDecodeRoundTripsCanonically) {
  std::mt19937_64 random(5);
  for (int trial = 0; trial < 10; ++trial) {
    ExactSum s;
    for (double t : RandomTerms(random, 100)) s.AddSquare(t);
    absl::StatusOr<ExactSum> back = ExactSum::Decode(s.Encode());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->Encode(), s.Encode());
    EXPECT_EQ(back->RoundToDouble(), s.RoundToDouble());
  }
  for (ExactSum special : {ExactSum(),
                           [] {
                             ExactSum n;
                             n.AddNaN();
                             return n;
                           }(),
                           [] {
                             ExactSum i;
                             i.AddInf();
                             return i;
                           }()}) {
    absl::StatusOr<ExactSum> back = ExactSum::Decode(special.Encode());
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->Encode(), special.Encode());
  }
  EXPECT_LE(ExactSum().Encode().size(), 2u);
}

TEST(ExactSumTest, DecodeRefusesWhatEncodeDoesNotWrite) {
  ExactSum s;
  s.AddSquare(3.0);
  const std::string good = s.Encode();
  std::string bad_version = good;
  bad_version[0] = 2;
  std::string truncated = good.substr(0, good.size() - 1);
  std::string zero_digit = good;
  zero_digit.replace(6, 4, std::string(4, '\0'));
  for (const std::string& bytes :
       {std::string(), std::string("\x01"), bad_version, truncated, zero_digit,
        std::string("\x01\x01junk", 6), std::string("\x01\x07", 2)}) {
    absl::StatusOr<ExactSum> decoded = ExactSum::Decode(bytes);
    EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument)
        << testing::PrintToString(bytes);
  }
  EXPECT_THAT(ExactSum::Decode(bad_version).status().message(),
              HasSubstr("expected what ExactSum::Encode writes (version 1)"));
}

TEST(ExactSumTest, AFloatingPointSumOfReducibleFormsIsExact) {
  std::mt19937_64 random(11);
  // 64 ranks' sums, reduced as NCCL or Gloo would: entry by entry, in an
  // order of their choosing (here random per entry).
  std::vector<ExactSum> ranks(64);
  ExactSum merged;
  for (ExactSum& rank : ranks) {
    for (double t : RandomTerms(random, 50)) rank.AddSquare(t);
    merged.Merge(rank);
  }
  std::vector<std::vector<double>> forms(
      ranks.size(), std::vector<double>(ExactSum::kReducibleSize));
  for (size_t r = 0; r < ranks.size(); ++r)
    ranks[r].ToReducible(absl::MakeSpan(forms[r]));
  std::vector<double> sums(ExactSum::kReducibleSize, 0.0);
  std::vector<size_t> order(ranks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (int e = 0; e < ExactSum::kReducibleSize; ++e) {
    std::shuffle(order.begin(), order.end(), random);
    for (size_t r : order) sums[e] += forms[r][e];
  }
  absl::StatusOr<ExactSum> reduced = ExactSum::FromReduced(sums);
  ASSERT_TRUE(reduced.ok()) << reduced.status();
  EXPECT_EQ(reduced->Encode(), merged.Encode());
  EXPECT_TRUE(reduced->finite());
  // One rank's infinity makes the whole sum +Inf.
  ExactSum inf;
  inf.AddInf();
  std::vector<double> inf_form(ExactSum::kReducibleSize);
  inf.ToReducible(absl::MakeSpan(inf_form));
  for (int e = 0; e < ExactSum::kReducibleSize; ++e) inf_form[e] += sums[e];
  EXPECT_TRUE(ExactSum::FromReduced(inf_form)->is_inf());
  sums[3] = 0.5;
  EXPECT_EQ(ExactSum::FromReduced(sums).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      ExactSum::FromReduced(absl::MakeSpan(sums).subspan(1)).status().code(),
      absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gradnorm
