#include "common/norm_math.h"

#include <cmath>
#include <limits>

#include "common/norm_type.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(NormMathTest, NanMaxLetsNanWinFromEitherSideAndInfOverFinite) {
  EXPECT_TRUE(std::isnan(NanMax(kNaN, 1.0)));
  EXPECT_TRUE(std::isnan(NanMax(1.0, kNaN)));
  EXPECT_TRUE(std::isnan(NanMax(kInf, kNaN)));
  EXPECT_TRUE(std::isnan(NanMax(kNaN, kInf)));
  EXPECT_EQ(NanMax(kInf, 3.0), kInf);
  EXPECT_EQ(NanMax(3.0, kInf), kInf);
  EXPECT_EQ(NanMax(2.0, 3.0), 3.0);
  EXPECT_EQ(NanMax(3.0, 2.0), 3.0);
  static_assert(NanMax(1.0, 2.0) == 2.0, "usable in constant expressions");
}

TEST(NormMathTest, NormFromPartialTakesTheRootOfP) {
  EXPECT_EQ(NormFromPartial(2.0, 25.0), 5.0);
  EXPECT_EQ(NormFromPartial(1.0, 7.5), 7.5);
  EXPECT_EQ(NormFromPartial(kInf, 7.5), 7.5);
  EXPECT_DOUBLE_EQ(NormFromPartial(3.0, 27.0), 3.0);
  EXPECT_TRUE(std::isnan(NormFromPartial(2.0, kNaN)));
  EXPECT_EQ(NormFromPartial(2.0, kInf), kInf);
}

TEST(NormMathTest, ClipCoefficientAddsTheEpsilon) {
  EXPECT_EQ(ClipCoefficient(1.0, 4.0), 1.0 / (4.0 + 1e-6));
  EXPECT_LT(ClipCoefficient(1.0, 1.0), 1.0);
  EXPECT_GT(ClipCoefficient(1.0, 0.0), 1.0);
  EXPECT_EQ(kClipEpsilon, 1e-6);
}

TEST(NormMathTest, NormTypesArePositiveFiniteOrInfinite) {
  EXPECT_TRUE(IsValidNormType(2.0));
  EXPECT_TRUE(IsValidNormType(0.5));
  EXPECT_TRUE(IsValidNormType(kInf));
  EXPECT_FALSE(IsValidNormType(0.0));
  EXPECT_FALSE(IsValidNormType(-1.0));
  EXPECT_FALSE(IsValidNormType(-kInf));
  EXPECT_FALSE(IsValidNormType(kNaN));
  EXPECT_TRUE(IsInfNorm(kInf));
  EXPECT_FALSE(IsInfNorm(-kInf));
  EXPECT_FALSE(IsInfNorm(2.0));
  EXPECT_TRUE(ValidateNormType(1.0).ok());
  absl::Status bad = ValidateNormType(-2.0);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.message(),
            "norm_type -2 is invalid: expected p > 0 (a finite value or +inf)");
  EXPECT_EQ(
      ValidateNormType(kNaN).message(),
      "norm_type nan is invalid: expected p > 0 (a finite value or +inf)");
}

}  // namespace
}  // namespace gradnorm
