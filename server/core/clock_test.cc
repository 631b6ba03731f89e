#include "server/core/clock.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(FakeClockTest, StandsStillUntilMoved) {
  FakeClock clock(absl::FromUnixSeconds(100));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(100));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(100));
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_EQ(clock.Now(), absl::FromUnixMillis(101500));
  clock.Set(absl::FromUnixSeconds(7));
  EXPECT_EQ(clock.Now(), absl::FromUnixSeconds(7));
}

TEST(RealClockTest, FollowsAbslNow) {
  absl::Time before = absl::Now();
  absl::Time now = Clock::Real()->Now();
  absl::Time after = absl::Now();
  EXPECT_LE(before, now);
  EXPECT_LE(now, after);
  EXPECT_EQ(Clock::Real(), Clock::Real());
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
