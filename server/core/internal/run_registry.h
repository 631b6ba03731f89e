// The aggregator's runs by id, and the lock that guards them.
//
//   AggregatorState state;
//   absl::MutexLock lock(&state.mu);
//   absl::StatusOr<Run*> run = state.runs.Find("r");  // NOT_FOUND: unknown
//
// Not thread-safe: the registry is guarded by AggregatorState::mu.
#ifndef GRADNORM_SERVER_CORE_INTERNAL_RUN_REGISTRY_H_
#define GRADNORM_SERVER_CORE_INTERNAL_RUN_REGISTRY_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/core/internal/run_state.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

class RunRegistry {
 public:
  using Map = std::map<std::string, std::unique_ptr<Run>, std::less<>>;

  // Every run and abandoned step of `index`, with each run's rounds replayed
  // through its policies in finalization order (only their index is kept).
  // DATA_LOSS when the index holds rounds or steps of an unknown run.
  absl::Status Load(StoreIndex index);

  // The registered run `run_id`: INVALID_ARGUMENT for a malformed id,
  // NOT_FOUND when it is not registered or is being deleted.
  absl::StatusOr<Run*> Find(absl::string_view run_id);
  // The run `run_id` whatever its state; nullptr when there is none.
  Run* Get(absl::string_view run_id) const;

  // Adds a new registration of record.run_id (which must not be present).
  Run& Add(RunRecord record);
  void Erase(absl::string_view run_id);

  size_t CountUnfinished() const;
  const Map& runs() const { return runs_; }

 private:
  Map runs_;
  uint64_t next_incarnation_ = 1;
};

// What the aggregator's parts share: the runs, guarded by one lock.
struct AggregatorState {
  absl::Mutex mu;
  RunRegistry runs ABSL_GUARDED_BY(mu);
  bool shutting_down ABSL_GUARDED_BY(mu) = false;
};

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_RUN_REGISTRY_H_
