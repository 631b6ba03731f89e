#include "server/rpc/call_deadline.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(AggregatorDeadlineTest, ShortensByAFifthUpToTheMargin) {
  const absl::Time now = absl::FromUnixSeconds(1000);
  EXPECT_EQ(AggregatorDeadline(absl::InfiniteFuture(), now),
            absl::InfiniteFuture());
  EXPECT_EQ(AggregatorDeadline(now + absl::Seconds(10), now),
            now + absl::Seconds(10) - absl::Milliseconds(200));
  EXPECT_EQ(AggregatorDeadline(now + absl::Milliseconds(500), now),
            now + absl::Milliseconds(400));
  EXPECT_EQ(AggregatorDeadline(now - absl::Seconds(1), now),
            now - absl::Seconds(1));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
