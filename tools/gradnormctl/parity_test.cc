#include "tools/gradnormctl/parity.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

using ::testing::HasSubstr;

std::vector<v1::RoundResult> Rounds(
    std::vector<std::pair<uint64_t, double>> s) {
  std::vector<v1::RoundResult> out;
  for (auto [step, total] : s) {
    out.emplace_back();
    out.back().set_step(step);
    out.back().set_total_norm(total);
  }
  return out;
}

TEST(ParityTest, EqualRunsSayYes) {
  ParityReport r = CompareTotals(Rounds({{0, 1.5}, {1, NAN}, {2, 3.0}}),
                                 Rounds({{0, 1.5}, {1, NAN}, {2, 3.0}}));
  EXPECT_TRUE(r.equal());
  EXPECT_EQ(r.compared, 3u);
  EXPECT_EQ(ParityText(r, "a", "b"),
            "runs a and b: 3 common steps, bitwise equal");
}

TEST(ParityTest, NamesTheFirstDifferingStepAndByHowMuch) {
  const double x = 1.0, y = std::nextafter(std::nextafter(1.0, 2.0), 2.0);
  ParityReport r =
      CompareTotals(Rounds({{0, 2.0}, {3, x}, {4, 5.0}, {5, 6.0}, {9, 1.0}}),
                    Rounds({{0, 2.0}, {3, y}, {4, 5.5}, {5, 6.0}, {7, 1.0}}));
  EXPECT_FALSE(r.equal());
  ASSERT_TRUE(r.first_difference.has_value());
  EXPECT_EQ(r.first_difference->step, 3u);
  EXPECT_EQ(r.first_difference->ulps, 2u);
  EXPECT_EQ(r.differing, 2u);
  EXPECT_EQ(r.compared, 4u);
  EXPECT_EQ(r.only_a, 1u);
  EXPECT_EQ(r.only_b, 1u);
  const std::string text = ParityText(r, "tp2", "tp4");
  EXPECT_THAT(text, HasSubstr("first differs at step 3: 1 vs "
                              "1.0000000000000004 (+4.44e-16, 4.44e-16 "
                              "relative, 2 ulp); 2 steps differ"));
  EXPECT_THAT(text, HasSubstr("not compared: 1 steps only in tp2, 1 only in "
                              "tp4"));
  EXPECT_THAT(ParityJson(r, "tp2", "tp4"),
              HasSubstr("\"equal\":false,\"compared\":4,\"differing\":2"));
  EXPECT_THAT(ParityJson(r, "tp2", "tp4"), HasSubstr("\"ulps\":2}}"));
}

TEST(ParityTest, ANaNAgainstANumberDiffers) {
  ParityReport r = CompareTotals(Rounds({{1, NAN}}), Rounds({{1, 2.0}}));
  ASSERT_FALSE(r.equal());
  EXPECT_EQ(r.first_difference->ulps, 0u);
  EXPECT_THAT(ParityJson(r, "a", "b"), HasSubstr("\"a\":\"NaN\""));
}

}  // namespace
}  // namespace gradnormctl
}  // namespace gradnorm
