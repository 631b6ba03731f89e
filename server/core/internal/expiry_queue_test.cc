#include "server/core/internal/expiry_queue.h"

#include <set>

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {
namespace {

const absl::Time kT0 = absl::FromUnixSeconds(1000);

TEST(ExpiryQueueTest, PopsDueExpiriesEarliestFirst) {
  ExpiryQueue queue;
  auto live = [](const Expiry&) { return true; };
  queue.Push({kT0 + absl::Seconds(3), "r", 3, 0}, live);
  queue.Push({kT0 + absl::Seconds(1), "r", 1, 0}, live);
  queue.Push({kT0 + absl::Seconds(2), "r", 2, 7}, live);
  EXPECT_FALSE(queue.PopDue(kT0).has_value());
  std::optional<Expiry> first = queue.PopDue(kT0 + absl::Seconds(2));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->step, 1u);
  std::optional<Expiry> second = queue.PopDue(kT0 + absl::Seconds(2));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->step, 2u);
  EXPECT_EQ(second->waiter_id, 7u);
  EXPECT_FALSE(queue.PopDue(kT0 + absl::Seconds(2)).has_value());
  EXPECT_EQ(queue.size(), 1u);
}

TEST(ExpiryQueueTest, PlanWaitSkipsDeadExpiriesAndCapsAtTheInterval) {
  ExpiryQueue queue;
  std::set<uint64_t> live_steps = {2};
  auto live = [&](const Expiry& e) { return live_steps.count(e.step) > 0; };
  queue.Push({kT0 + absl::Milliseconds(10), "r", 1, 0}, live);
  queue.Push({kT0 + absl::Milliseconds(30), "r", 2, 0}, live);
  EXPECT_EQ(queue.PlanWait(kT0, absl::Milliseconds(50), live),
            absl::Milliseconds(30));
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.PlanWait(kT0, absl::Milliseconds(20), live),
            absl::Milliseconds(20));
  EXPECT_EQ(
      queue.PlanWait(kT0 + absl::Seconds(1), absl::Milliseconds(20), live),
      absl::ZeroDuration());
}

TEST(ExpiryQueueTest, AnEarlierDeadlineThanThePlannedWakeUpAsksToWakeNow) {
  ExpiryQueue queue;
  auto live = [](const Expiry&) { return true; };
  queue.PlanWait(kT0, absl::Milliseconds(50), live);
  EXPECT_FALSE(queue.wake_now());
  queue.Push({kT0 + absl::Milliseconds(80), "r", 1, 0}, live);
  EXPECT_FALSE(queue.wake_now());
  queue.Push({kT0 + absl::Milliseconds(20), "r", 2, 0}, live);
  EXPECT_TRUE(queue.wake_now());
  queue.PlanWait(kT0, absl::Milliseconds(50), live);
  EXPECT_FALSE(queue.wake_now());
}

TEST(ExpiryQueueTest, CompactsToTheLiveExpiriesWhenItDoubles) {
  ExpiryQueue queue;
  // Only odd steps still wait.
  auto live = [](const Expiry& e) { return e.step % 2 == 1; };
  const absl::Time far = kT0 + absl::Hours(1);
  for (uint64_t step = 0; step < ExpiryQueue::kMinToCompact - 1; ++step) {
    queue.Push({far, "r", step, 0}, live);
  }
  EXPECT_EQ(queue.size(), ExpiryQueue::kMinToCompact - 1);
  queue.Push({far, "r", ExpiryQueue::kMinToCompact - 1, 0}, live);
  EXPECT_EQ(queue.size(), ExpiryQueue::kMinToCompact / 2);
  size_t popped = 0;
  while (std::optional<Expiry> due = queue.PopDue(far)) {
    EXPECT_EQ(due->step % 2, 1u);
    ++popped;
  }
  EXPECT_EQ(popped, ExpiryQueue::kMinToCompact / 2);
}

}  // namespace
}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
