#include "server/core/internal/commit_pipeline.h"

#include <utility>

namespace gradnorm {
namespace server {
namespace aggregator_internal {

void CommitPipeline::Queue(RoundRecord record) {
  absl::MutexLock lock(&mu_);
  queued_.push_back(std::move(record));
}

void CommitPipeline::HandOver() {
  {
    absl::MutexLock lock(&mu_);
    if (handing_over_) return;
    handing_over_ = true;
  }
  while (true) {
    RoundRecord next;
    {
      absl::MutexLock lock(&mu_);
      if (queued_.empty()) {
        handing_over_ = false;
        return;
      }
      next = std::move(queued_.front());
      queued_.pop_front();
    }
    std::string run_id = next.result.run_id();
    const uint64_t step = next.result.step();
    const absl::Time appended = clock_->Now();
    store_->AppendRound(std::move(next), [this, run_id = std::move(run_id),
                                          step, appended](absl::Status status) {
      on_committed_(run_id, step, appended, std::move(status));
    });
  }
}

void CommitPipeline::AwaitHandedOver() {
  absl::MutexLock lock(&mu_);
  auto handed_over = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return queued_.empty() && !handing_over_;
  };
  mu_.Await(absl::Condition(&handed_over));
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
