// The coordinator's pure logic (docs/protocol.md): runs, rounds, agreement,
// idempotency, timeouts, bounds, clip decisions and telemetry queries. It knows
// nothing of gRPC: the service adapter parses a request, calls one method here
// and maps the absl::Status it gets to a grpc::Status.
//
//   FakeClock clock;
//   MemoryTelemetryStore store;
//   auto aggregator = Aggregator::Create(AggregatorOptions(), &store, &clock);
//   (*aggregator)->RegisterRun(register_request);        // run "r", N = 2
//   (*aggregator)->Report(report_from_job_0, absl::InfiniteFuture(), done0);
//   (*aggregator)->Report(report_from_job_1, absl::InfiniteFuture(), done1);
//   // done0 and done1 now both got the same RoundResult (once the store
//   // committed the round's record).
//
// Rounds. A round is (run, step). It opens with its first report and is
// finalized by the report that completes it (all N participants reported):
// the partials are combined in participant order (p-norm: sum, then
// ^(1/p), sqrt for p = 2; inf-norm: max; NaN wins), the run's policies decide
// (clip_policy.h, spike_rule.h), the record is appended to the store, and only
// once the store has committed it do all waiters' callbacks run with the same
// result. A round is finalized once; its result never changes.
//
// Time. Deadlines are checked by ExpireRounds(), which an internal thread calls
// when the earliest pending deadline passes and at least every
// AggregatorOptions::expiry_interval (default 50 ms, real time); with an
// interval of zero there is no thread and the owner (a test with a FakeClock)
// calls ExpireRounds() itself. A round that is not complete round_timeout_ms
// after its first report is abandoned: every waiter fails with ABORTED naming
// the missing participants, and later reports for that step fail with
// FAILED_PRECONDITION, also after a restart (abandoned steps are stored
// before their waiters are answered). A
// waiter whose own deadline passes fails alone with DEADLINE_EXCEEDED naming
// the missing participants; its report stays in the round, so retrying the
// same report rejoins it. The two codes let a caller tell a final outcome
// (ABORTED) from one it may wait out by repeating its report
// (DEADLINE_EXCEEDED).
//
// Restart. Create() loads every run and abandoned step and an index of the
// stored rounds (step, sequence, total and action: TelemetryStore::LoadIndex),
// not the rounds' records, and replays the policies over each run's history
// in finalization order, so decisions after a restart are those the
// coordinator would have made without it. A late report of a step stored
// before the restart reads that round back from the store. Unfinished rounds
// are lost; clients retry (the same reports) and complete them.
//
// Memory: the rounds finalized since start stay in memory (their records);
// of older ones only the index. Queries (history, summary, a watch's
// replay) read the store, outside the Aggregator's lock.
//
// Thread-safety: every method may be called from any thread concurrently.
// Callbacks (Report's `done`, Watch's `on_ready`, the observer) are called
// without the Aggregator's locks held, from the calling thread (for errors and
// already finalized rounds: before Report returns), the store's commit thread,
// the expiry thread or the thread calling Shutdown(). They may call Report,
// Watch and the queries (a round a callback finalizes reaches the store after
// the one being answered), but not RegisterRun or Shutdown, which wait for the
// store; and they must not block for long.
#ifndef GRADNORM_SERVER_CORE_AGGREGATOR_H_
#define GRADNORM_SERVER_CORE_AGGREGATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/clock.h"
#include "server/core/event_log.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

struct AggregatorOptions {
  // Unfinished runs this coordinator holds at once; RegisterRun of a new run
  // beyond it fails with RESOURCE_EXHAUSTED (finish or delete runs to make
  // room). Runs loaded from the store always load.
  uint32_t max_runs = 1000;
  // Rounds of one run waiting for participants at once; a report opening one
  // more fails with RESOURCE_EXHAUSTED.
  uint32_t max_open_rounds_per_run = 64;
  // Largest RunConfig.participants accepted (RESOURCE_EXHAUSTED above it).
  uint32_t max_participants = 4096;
  // The longest the internal thread waits between ExpireRounds() calls (it
  // also wakes at each pending deadline); zero: no thread.
  absl::Duration expiry_interval = absl::Milliseconds(50);
  // Called once per round whose record the store committed, with the time
  // between the append and the commit (for metrics: rounds by action, store
  // commit latency). Optional.
  std::function<void(const v1::RoundResult& result,
                     absl::Duration commit_latency)>
      on_round_committed;
  // Called once, with the store's error, when the store first fails to
  // commit a round: from then on the Aggregator refuses reports with
  // UNAVAILABLE (its policy state moved past a round it could not store), so
  // its owner should replace it with one loaded from the store again (the
  // coordinator binary restarts its server in-process). Called without the
  // Aggregator's locks held, from the store's commit thread. Optional.
  std::function<void(const absl::Status& status)> on_store_failed;
  // Retention: a finished run is deleted with its history (as DeleteRun)
  // this long after it was finished; InfiniteDuration() keeps every run.
  // Applied by ApplyRetention(), which an internal thread calls every
  // retention_interval (real time) when retention is finite and the interval
  // is not zero; otherwise the owner calls it. Deleting one run never holds
  // up the rounds of others.
  absl::Duration retain_finished_runs = absl::InfiniteDuration();
  absl::Duration retention_interval = absl::Minutes(10);
  // A run is active while it has open rounds or had a report this recently
  // (AggregatorStats::active_runs).
  absl::Duration active_window = absl::Minutes(10);
  // Where the aggregator logs a run registered, finished or deleted (info)
  // and a round that timed out (warning, with the missing participants).
  // Optional; not owned.
  EventLog* log = nullptr;
};

// Counts for gauges (no per-run detail).
struct AggregatorStats {
  uint64_t runs = 0;
  // Unfinished runs with open rounds or a report within
  // AggregatorOptions::active_window (a run that stopped reporting, or was
  // finished, does not count).
  uint64_t active_runs = 0;
  // Rounds waiting for participants or for their commit, over all runs.
  uint64_t open_rounds = 0;
  // Finalized rounds whose records are in memory: those finalized since
  // start and those read back from the store for a late report. The others
  // stay in the store (queries read them there).
  uint64_t rounds_in_memory = 0;
  // Report callbacks not yet called.
  uint64_t waiters = 0;
  // Deadlines (of rounds and of waiters) kept for the expiry check, including
  // those of rounds and waiters already done, until the next compaction.
  uint64_t deadlines = 0;
};

// A cursor over a run's finalized rounds: first the rounds finalized before
// Watch() with step >= from_step, in step order, then each round with step >=
// from_step committed after Watch(), in commit order. Each round is returned
// exactly once. Once the run is finished and every one of its rounds was
// returned, Next() returns OUT_OF_RANGE: the watch is over. Pull-based, so a
// slow consumer costs no memory:
//
//   watch = aggregator->Watch("r", 0, [&] { reactor->WakeUp(); });
//   while (true) {
//     absl::StatusOr<std::optional<v1::RoundResult>> next = watch->Next();
//     if (!next.ok()) break;                 // UNAVAILABLE: shutting down;
//                                            // OUT_OF_RANGE: run finished
//     if (!next->has_value()) break;         // nothing now: on_ready will fire
//     Write(**next);
//   }
//
// Thread-safety: Next() may be called from any thread, but not concurrently
// with itself on the same watch. Destroy every RoundWatch before its
// Aggregator.
class RoundWatch {
 public:
  virtual ~RoundWatch() = default;

  // The next round, std::nullopt when none is ready now (the watch's on_ready
  // is then called once a round becomes ready), OUT_OF_RANGE once the run is
  // finished and every round was returned, NOT_FOUND once the run is deleted,
  // or UNAVAILABLE once the Aggregator is shutting down (on_ready is called
  // for each of these too).
  virtual absl::StatusOr<std::optional<v1::RoundResult>> Next() = 0;
};

class Aggregator {
 public:
  // Receives a Report's outcome, exactly once.
  using ReportCallback = std::function<void(absl::StatusOr<v1::RoundResult>)>;

  // Loads runs and finished rounds from `store` and starts the expiry thread
  // (unless options.expiry_interval is zero). `store` and `clock` must outlive
  // the Aggregator. Errors: INVALID_ARGUMENT (options out of range), or the
  // store's Load error.
  static absl::StatusOr<std::unique_ptr<Aggregator>> Create(
      const AggregatorOptions& options, TelemetryStore* store, Clock* clock);

  // Shuts down (see Shutdown()) if that has not happened yet.
  virtual ~Aggregator() = default;

  // Registers a run: validates the run id and config (run_config.h), fills
  // defaults and stores the run durably before returning (created = true).
  // The same run with a config equal after filling defaults: a no-op
  // (created = false). Errors: INVALID_ARGUMENT (bad run id or config; the
  // message names the field and its allowed range), FAILED_PRECONDITION (the
  // run exists with another config, the message naming each differing field
  // with both values; or it is finished), RESOURCE_EXHAUSTED (max_runs
  // unfinished runs), UNAVAILABLE
  // (shutting down), or the store's error.
  virtual absl::StatusOr<v1::RegisterRunResponse> RegisterRun(
      const v1::RegisterRunRequest& request) = 0;

  // Adds one participant's partial to the round (run_id, step) and calls
  // `done` once the round is finalized and durable, with the round's result.
  // Never blocks waiting for other participants. `deadline` is the caller's
  // own (absl::InfiniteFuture() for none). Outcomes passed to `done`:
  // - OK: the round's result, identical for every participant; also for a
  //   duplicate report with the same partial, before or after finalization and
  //   after a restart.
  // - INVALID_ARGUMENT: bad run id, participant not in [0, participants),
  //   partial negative (or -Inf).
  // - NOT_FOUND: unknown run.
  // - ALREADY_EXISTS: this participant already reported another partial for
  //   this step (the message names both values).
  // - FAILED_PRECONDITION: the step was abandoned after its round timed out;
  //   or the run is finished and the step has no round; or the total is
  //   non-finite and the run's nonfinite_policy is ERROR (the
  //   round is still finalized and stored, and duplicates get this again).
  // - ABORTED: the round timed out and is abandoned (the message lists the
  //   missing participants), or the run was finished or deleted while the
  //   round waited.
  // - DEADLINE_EXCEEDED: `deadline` passed (the report stays in the round:
  //   repeating it rejoins); the message lists the missing participants.
  // - RESOURCE_EXHAUSTED: the report would open a round beyond
  //   max_open_rounds_per_run.
  // - UNAVAILABLE: shutting down, or the store failed to commit (the
  //   coordinator accepts no more reports; retry against a restarted one).
  virtual void Report(const v1::ReportRequest& request, absl::Time deadline,
                      ReportCallback done) = 0;

  // Finishes a run: no new rounds from now on (see Report); its open rounds
  // are abandoned (stored as such; their waiters get ABORTED) and the finish
  // is stored before this returns. A finished run: a no-op, answered with
  // abandoned_rounds 0. Errors: INVALID_ARGUMENT (bad run id), NOT_FOUND,
  // UNAVAILABLE (shutting down), or the store's error (the run then stays
  // unfinished; rounds abandoned stay abandoned).
  virtual absl::StatusOr<v1::FinishRunResponse> FinishRun(
      absl::string_view run_id) = 0;

  // Deletes a run and its history: waiters of its open rounds get ABORTED,
  // rounds being committed land first, then the store deletes the run, and
  // only then is it gone from memory (reports meanwhile get NOT_FOUND);
  // watches of the run return NOT_FOUND. Errors: INVALID_ARGUMENT,
  // NOT_FOUND, UNAVAILABLE, or the store's error (the run then stays, whole
  // but for the rounds whose waiters were told ABORTED).
  virtual absl::StatusOr<v1::DeleteRunResponse> DeleteRun(
      absl::string_view run_id) = 0;

  // Deletes every run finished longer than retain_finished_runs ago (by the
  // Clock), logging each (run_deleted with cause=retention). Returns how
  // many it deleted; a run the store failed to delete stays and is retried
  // next time (the log says so).
  virtual int ApplyRetention() = 0;

  // Fails every round and waiter whose deadline (by the Clock) has passed, as
  // described above. Called by the internal thread, or by the owner when
  // expiry_interval is zero. Cheap when nothing expired.
  virtual void ExpireRounds() = 0;

  // Every run, ordered by run id.
  virtual v1::ListRunsResponse ListRuns() const = 0;

  // One run. Errors: INVALID_ARGUMENT (bad run id), NOT_FOUND.
  virtual absl::StatusOr<v1::RunInfo> GetRun(
      absl::string_view run_id) const = 0;

  // The run's finalized rounds over [from_step, to_step] downsampled into at
  // most max_points buckets (history.h). Errors: INVALID_ARGUMENT (bad run id,
  // from_step > to_step when to_step != 0), NOT_FOUND.
  virtual absl::StatusOr<v1::GetHistoryResponse> GetHistory(
      const v1::GetHistoryRequest& request) const = 0;

  // Summary statistics of the run's finalized rounds over the range
  // (history.h). Errors: as GetHistory.
  virtual absl::StatusOr<v1::GetSummaryResponse> GetSummary(
      const v1::GetSummaryRequest& request) const = 0;

  // The run's finalized rounds with steps in [from_step, to_step] (to_step
  // 0: up to the last), in step order, at most `limit` of them (a page: the
  // next one starts after the last step returned). Errors: as GetHistory,
  // and INVALID_ARGUMENT for a limit of 0.
  virtual absl::StatusOr<std::vector<v1::RoundResult>> GetRounds(
      absl::string_view run_id, uint64_t from_step, uint64_t to_step,
      uint32_t limit) const = 0;

  // Starts a watch over the run's finalized rounds (see RoundWatch).
  // `on_ready` is called (from any thread, never under the Aggregator's locks,
  // possibly spuriously) when the watch's last Next() returned nullopt and a
  // round became ready, and on shutdown. Errors: INVALID_ARGUMENT (bad run
  // id), NOT_FOUND, UNAVAILABLE (shutting down).
  virtual absl::StatusOr<std::unique_ptr<RoundWatch>> Watch(
      absl::string_view run_id, uint64_t from_step,
      std::function<void()> on_ready) = 0;

  // Counts for gauges.
  virtual AggregatorStats Stats() const = 0;

  // Graceful shutdown: every waiter gets UNAVAILABLE, every later call gets
  // UNAVAILABLE, watches return UNAVAILABLE, the expiry thread stops; then
  // waits for the store to commit every appended record (TelemetryStore::
  // Flush) and returns its status. Idempotent.
  virtual absl::Status Shutdown() = 0;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_AGGREGATOR_H_
