#include "client/communicator.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(CombineValuesTest, SumAddsInFp64) {
  EXPECT_EQ(CombineValues(ReduceOp::kSum, 1e300, 1e300), 2e300);
  EXPECT_EQ(CombineValues(ReduceOp::kSum, 0.1, 0.2), 0.1 + 0.2);
  EXPECT_TRUE(std::isnan(CombineValues(ReduceOp::kSum, kNaN, kInf)));
}

TEST(CombineValuesTest, MaxKeepsNaNWhicheverSideItIsOn) {
  EXPECT_EQ(CombineValues(ReduceOp::kMax, 3.0, 7.0), 7.0);
  EXPECT_EQ(CombineValues(ReduceOp::kMax, 7.0, 3.0), 7.0);
  EXPECT_EQ(CombineValues(ReduceOp::kMax, kInf, 3.0), kInf);
  EXPECT_TRUE(std::isnan(CombineValues(ReduceOp::kMax, kNaN, 3.0)));
  EXPECT_TRUE(std::isnan(CombineValues(ReduceOp::kMax, 3.0, kNaN)));
  EXPECT_TRUE(std::isnan(CombineValues(ReduceOp::kMax, kInf, kNaN)));
  EXPECT_TRUE(std::isnan(CombineValues(ReduceOp::kMax, kNaN, kInf)));
}

TEST(ReduceOpNameTest, NamesBothOps) {
  EXPECT_EQ(ReduceOpName(ReduceOp::kSum), "sum");
  EXPECT_EQ(ReduceOpName(ReduceOp::kMax), "max");
}

}  // namespace
}  // namespace gradnorm
