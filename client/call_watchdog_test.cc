#include "client/call_watchdog.h"

#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(CallWatchdogTest, FiresAtTheDeadline) {
  CallWatchdog watchdog;
  grpc::ClientContext context;
  watchdog.Arm(&context, absl::Now() + absl::Milliseconds(50));
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_TRUE(watchdog.Disarm());
}

TEST(CallWatchdogTest, DisarmedInTimeDoesNotFire) {
  CallWatchdog watchdog;
  grpc::ClientContext context;
  watchdog.Arm(&context, absl::Now() + absl::Seconds(30));
  EXPECT_FALSE(watchdog.Disarm());
  // Re-armed with an earlier deadline than the one the thread sleeps toward:
  // it wakes for it.
  grpc::ClientContext second;
  watchdog.Arm(&second, absl::Now() + absl::Milliseconds(50));
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_TRUE(watchdog.Disarm());
}

TEST(CallWatchdogTest, LaterArmsAreWatchedAfterEarlierDeadlinesPass) {
  CallWatchdog watchdog;
  grpc::ClientContext first;
  // The thread sleeps toward this deadline...
  watchdog.Arm(&first, absl::Now() + absl::Milliseconds(100));
  EXPECT_FALSE(watchdog.Disarm());
  // ...and, woken there, sleeps on toward this later one.
  grpc::ClientContext second;
  watchdog.Arm(&second, absl::Now() + absl::Milliseconds(300));
  absl::SleepFor(absl::Milliseconds(150));
  grpc::ClientContext third;
  watchdog.Arm(&third, absl::Now() + absl::Milliseconds(300));
  absl::SleepFor(absl::Milliseconds(200));
  // The second deadline passed, but `second` is no longer armed.
  EXPECT_FALSE(watchdog.Disarm());
  grpc::ClientContext fourth;
  watchdog.Arm(&fourth, absl::Now() + absl::Milliseconds(100));
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_TRUE(watchdog.Disarm());
}

}  // namespace
}  // namespace gradnorm
