// Hands finalized rounds to the store in the order they were finalized.
//
//   CommitPipeline pipeline(&store, &clock, on_committed);
//   pipeline.Queue(record);   // under the aggregator's lock, in order
//   pipeline.HandOver();      // after releasing it
//
// Rounds are finalized under the aggregator's lock but handed over after it is
// released (the store may commit inline and call on_committed, which takes
// that lock). Without this queue two threads could hand over rounds in the
// opposite order, so a crash between their commits could leave a stored
// history without a round that a stored decision already counted, and the
// policy state reloaded at restart would differ from the one that decided.
//
// Thread-safety: every method may be called from any thread. Its own lock is
// taken after the aggregator's (Queue), never before.
#ifndef GRADNORM_SERVER_CORE_INTERNAL_COMMIT_PIPELINE_H_
#define GRADNORM_SERVER_CORE_INTERNAL_COMMIT_PIPELINE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/clock.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

class CommitPipeline {
 public:
  // Called once per round with the store's verdict; `appended` is when the
  // round was handed over.
  using OnCommitted =
      std::function<void(const std::string& run_id, uint64_t step,
                         absl::Time appended, absl::Status status)>;

  CommitPipeline(TelemetryStore* store, Clock* clock, OnCommitted on_committed)
      : store_(store), clock_(clock), on_committed_(std::move(on_committed)) {}

  // Queues a finalized round; called in finalization order.
  void Queue(RoundRecord record) ABSL_LOCKS_EXCLUDED(mu_);
  // Hands the queued rounds to the store in order; one thread at a time
  // (another caller returns at once: the thread handing over takes its rounds
  // too). The caller holds none of the aggregator's locks.
  void HandOver() ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until every queued round was handed to the store.
  void AwaitHandedOver() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  TelemetryStore* const store_;
  Clock* const clock_;
  const OnCommitted on_committed_;

  absl::Mutex mu_;
  std::deque<RoundRecord> queued_ ABSL_GUARDED_BY(mu_);
  bool handing_over_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_COMMIT_PIPELINE_H_
