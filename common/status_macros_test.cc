#include "common/status_macros.h"

#include <string>

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

absl::StatusOr<int> Half(int value) {
  if (value % 2 != 0) {
    return absl::InvalidArgumentError("expected an even value");
  }
  return value / 2;
}

absl::StatusOr<int> Quarter(int value) {
  ASSIGN_OR_RETURN(int half, Half(value));
  ASSIGN_OR_RETURN(int quarter, Half(half));
  return quarter;
}

absl::Status CheckQuarter(int value) {
  RETURN_IF_ERROR(Quarter(value).status());
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagatesValues) {
  absl::StatusOr<int> quarter = Quarter(12);
  ASSERT_TRUE(quarter.ok());
  EXPECT_EQ(*quarter, 3);
  EXPECT_TRUE(CheckQuarter(8).ok());
}

TEST(StatusMacrosTest, PropagatesTheFirstError) {
  absl::StatusOr<int> quarter = Quarter(6);
  EXPECT_EQ(quarter.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(quarter.status().message(), "expected an even value");
  EXPECT_EQ(CheckQuarter(5).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gradnorm
