#include "server/core/number_format.h"

#include <limits>

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(FormatNumberTest, ShortestRoundTrip) {
  EXPECT_EQ(FormatNumber(1.0), "1");
  EXPECT_EQ(FormatNumber(0.97), "0.97");
  EXPECT_EQ(FormatNumber(5.477225575051661), "5.477225575051661");
  EXPECT_EQ(FormatNumber(-2.5), "-2.5");
  EXPECT_EQ(FormatNumber(6e31), "6e+31");
  EXPECT_EQ(FormatNumber(std::numeric_limits<double>::quiet_NaN()), "nan");
  EXPECT_EQ(FormatNumber(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(FormatNumber(-std::numeric_limits<double>::infinity()), "-inf");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
