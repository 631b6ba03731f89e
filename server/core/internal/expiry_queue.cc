#include "server/core/internal/expiry_queue.h"

#include <algorithm>
#include <utility>

namespace gradnorm {
namespace server {
namespace aggregator_internal {

void ExpiryQueue::Push(Expiry expiry, IsLive is_live) {
  if (expiry.when < wake_at_) wake_now_ = true;
  heap_.push(std::move(expiry));
  if (heap_.size() < compact_at_) return;
  std::vector<Expiry> live;
  while (!heap_.empty()) {
    if (is_live(heap_.top())) live.push_back(heap_.top());
    heap_.pop();
  }
  compact_at_ = std::max(kMinToCompact, 2 * live.size());
  heap_ = decltype(heap_)(std::greater<Expiry>(), std::move(live));
}

absl::Duration ExpiryQueue::PlanWait(absl::Time now, absl::Duration interval,
                                     IsLive is_live) {
  while (!heap_.empty() && !is_live(heap_.top())) heap_.pop();
  absl::Duration wait = interval;
  if (!heap_.empty()) {
    wait =
        std::min(wait, std::max(absl::ZeroDuration(), heap_.top().when - now));
  }
  wake_at_ = now + wait;
  wake_now_ = false;
  return wait;
}

std::optional<Expiry> ExpiryQueue::PopDue(absl::Time now) {
  if (heap_.empty() || heap_.top().when > now) return std::nullopt;
  Expiry due = heap_.top();
  heap_.pop();
  return due;
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
