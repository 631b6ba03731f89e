// A watch of one run's finalized rounds (Aggregator::Watch): first the stored
// rounds from a step on, read from the store a chunk at a time outside the
// aggregator's lock, then each round as it commits.
//
//   absl::MutexLock lock(&state.mu);
//   auto watch = std::make_unique<RunWatchImpl>(&state, &store, run, 0, ready);
//   ...                              // later, without the lock:
//   watch->Next();                   // a round, nothing yet, or the end
//
// When a round the watch waits for commits (or the run ends), the aggregator
// collects the watch's on_ready with WakeWatches and calls it after releasing
// its lock. Thread-safety as RoundWatch: Next() is never called concurrently
// with itself; the rest runs under AggregatorState::mu.
#ifndef GRADNORM_SERVER_CORE_INTERNAL_RUN_WATCH_H_
#define GRADNORM_SERVER_CORE_INTERNAL_RUN_WATCH_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/aggregator.h"
#include "server/core/internal/run_registry.h"
#include "server/core/internal/run_state.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

class RunWatchImpl final : public RoundWatch {
 public:
  // Follows `run` from `from_step` on; registers itself with the run.
  RunWatchImpl(AggregatorState* state, TelemetryStore* store, Run& run,
               uint64_t from_step, std::function<void()> on_ready)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu);
  ~RunWatchImpl() override;

  absl::StatusOr<std::optional<v1::RoundResult>> Next() override;

  const std::function<void()>& on_ready() const { return on_ready_; }

 private:
  friend void WakeWatches(Run& run, std::optional<uint64_t> step,
                          std::vector<std::function<void()>>* ready);

  static constexpr size_t kReplayChunk = 256;

  // Reads the next chunk of the replay when the buffer is empty.
  absl::Status FillReplay();

  AggregatorState* const state_;
  TelemetryStore* const store_;
  const std::string run_id_;
  // Which registration of run_id_ this watch follows.
  const uint64_t incarnation_;
  const uint64_t from_step_;
  const std::function<void()> on_ready_;
  // Only Next() touches these, never concurrently: no lock.
  std::deque<v1::RoundResult> replay_buffer_;
  bool replay_read_all_ = false;
  uint64_t next_step_;
  // Guarded by state_->mu.
  bool replaying_ = true;
  size_t snapshot_ = 0;  // live_log entries committed before the watch began.
  size_t live_pos_ = 0;
  bool armed_ = false;
};

// Under the aggregator's lock: disarms every armed watch of `run` that waits
// for `step` (every armed watch when nullopt) and adds its on_ready to
// *ready, to be called once the lock is released.
void WakeWatches(Run& run, std::optional<uint64_t> step,
                 std::vector<std::function<void()>>* ready);

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_RUN_WATCH_H_
