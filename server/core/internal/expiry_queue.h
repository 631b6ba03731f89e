// The deadlines the aggregator checks: each round's timeout and each waiting
// report's own deadline, earliest first.
//
//   ExpiryQueue queue;
//   queue.Push({deadline, "r", 7, /*waiter_id=*/0}, is_live);
//   absl::Duration wait = queue.PlanWait(now, interval, is_live);
//   while (std::optional<Expiry> due = queue.PopDue(now)) { ... }
//
// An answered waiter's or a finished round's deadline stays queued until it
// passes (a heap cannot drop it), so with long deadlines the queue would grow
// with the report rate times the deadline; Push compacts it to what can still
// expire whenever it doubles. `is_live` says whether an expiry's round (and
// waiter) still waits.
//
// Not thread-safe: the aggregator guards it with its lock.
#ifndef GRADNORM_SERVER_CORE_INTERNAL_EXPIRY_QUEUE_H_
#define GRADNORM_SERVER_CORE_INTERNAL_EXPIRY_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

// A deadline to check: a round's timeout (waiter_id 0) or one waiter's.
struct Expiry {
  absl::Time when;
  std::string run_id;
  uint64_t step = 0;
  uint64_t waiter_id = 0;
  bool operator>(const Expiry& other) const { return when > other.when; }
};

class ExpiryQueue {
 public:
  using IsLive = absl::FunctionRef<bool(const Expiry&)>;

  // Below this many, the queue is never compacted.
  static constexpr size_t kMinToCompact = 4096;

  // Queues `expiry`; when it comes before the planned wake-up, wake_now()
  // turns true.
  void Push(Expiry expiry, IsLive is_live);

  // Drops the expiries at the front that can no longer expire and returns how
  // long to sleep: until the earliest deadline left, at most `interval`.
  // Records the planned wake-up and clears wake_now().
  absl::Duration PlanWait(absl::Time now, absl::Duration interval,
                          IsLive is_live);
  bool wake_now() const { return wake_now_; }

  // The earliest expiry due at `now`, removed; nullopt when none is due.
  std::optional<Expiry> PopDue(absl::Time now);

  size_t size() const { return heap_.size(); }

 private:
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<Expiry>> heap_;
  size_t compact_at_ = kMinToCompact;
  absl::Time wake_at_ = absl::InfiniteFuture();
  bool wake_now_ = false;
};

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_EXPIRY_QUEUE_H_
