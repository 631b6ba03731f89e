// What the aggregator holds for one run: its registration, policy state, open
// and finalized rounds, abandoned steps and watches; and the wording shared by
// every message that names a round or its missing participants.
//
// Not thread-safe: a Run is guarded by the aggregator's lock
// (AggregatorState::mu).
#ifndef GRADNORM_SERVER_CORE_INTERNAL_RUN_STATE_H_
#define GRADNORM_SERVER_CORE_INTERNAL_RUN_STATE_H_

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/aggregator.h"
#include "server/core/history_index.h"
#include "server/core/round_policy.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

inline constexpr absl::string_view kShuttingDown =
    "the coordinator is shutting down; retry against the restarted "
    "coordinator";

// A report's callback with the outcome it gets once the lock is released.
using Call =
    std::pair<Aggregator::ReportCallback, absl::StatusOr<v1::RoundResult>>;

// Runs each call (in order) and then each on_ready; both without locks held.
void RunCallbacks(std::vector<Call>& calls,
                  const std::vector<std::function<void()>>& ready = {});

class RunWatchImpl;

struct Waiter {
  uint64_t id = 0;
  Aggregator::ReportCallback done;
};

struct OpenRound {
  absl::Time first_report;
  absl::Time deadline;
  std::vector<bool> reported;
  std::vector<double> partials;
  // Each participant's exact partial (ExactSum bytes), empty when it sent
  // only the double.
  std::vector<std::string> exact_partials;
  std::vector<absl::Time> arrivals;
  std::vector<uint64_t> num_elements;
  uint32_t count = 0;
  // Finalized: `record` is with the store, waiting for its commit.
  bool committing = false;
  RoundRecord record;
  std::vector<Waiter> waiters;

  // The participants that have not reported, ascending.
  std::vector<uint32_t> Missing() const;
  // "participants 0-2, 5 (4 of 8 reported)".
  std::string MissingSummary() const;
};

struct FinishedRound {
  RoundRecord record;
  // 0 for rounds read back from the store; else 1 + the index in
  // Run::live_log.
  size_t live_index = 0;
};

struct Run {
  Run(RunRecord record, uint64_t incarnation)
      : info(std::move(record)),
        policy(info.config),
        incarnation(incarnation) {}
  // info.finished_unix_micros != 0 once the run is finished.
  RunRecord info;
  RoundPolicy policy;
  uint64_t next_sequence = 1;
  // Rounds finalized since start, and stored ones read back for a late
  // duplicate report; the others stay in the store.
  std::map<uint64_t, FinishedRound> finished;
  // Steps of the rounds stored before start, ascending.
  std::vector<uint64_t> stored_steps;
  // Block summaries of every committed round, for histories.
  HistoryIndex history;
  // Finalized rounds in all, and the highest finalized step (valid when
  // rounds > 0).
  uint64_t rounds = 0;
  uint64_t last_step = 0;
  std::map<uint64_t, OpenRound> open;
  // Step -> why it was abandoned.
  std::map<uint64_t, std::string> abandoned;
  // Steps committed since start, in commit order.
  std::vector<uint64_t> live_log;
  std::set<RunWatchImpl*> watches;
  // When the run's last report arrived (InfinitePast: none since start).
  absl::Time last_report = absl::InfinitePast();
  // Which registration of the run id this is: a run deleted and registered
  // again is another run.
  const uint64_t incarnation;
  // Set while DeleteRun waits for the store: the run answers NOT_FOUND.
  bool deleting = false;

  bool is_finished() const { return info.finished_unix_micros != 0; }

  // Counts one more finalized round, of `step`.
  void CountRound(uint64_t step) {
    last_step = rounds == 0 ? step : std::max(last_step, step);
    ++rounds;
  }

  // The run as queries show it.
  v1::RunInfo Info() const;

  // The result a report of a finalized round gets: the round's result, or
  // FAILED_PRECONDITION for a non-finite total under NON_FINITE_POLICY_ERROR.
  absl::StatusOr<v1::RoundResult> Outcome(const RoundRecord& record) const;
};

// "step 7 of run r".
std::string RoundName(absl::string_view run_id, uint64_t step);

// "0-2, 5, 7-9": compact even when hundreds of participants are missing, and
// capped so that a message stays readable.
std::string FormatIds(const std::vector<uint32_t>& ids);

// Whether a repeated report carries the partial already received (NaN equals
// NaN: a retry of a non-finite report is the same report).
inline bool SamePartial(double a, double b) {
  return (a != a && b != b) || a == b;
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_RUN_STATE_H_
