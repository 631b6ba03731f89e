// The Aggregator: its parts and the methods that tie them together.
//
// - state_: the runs (RunRegistry) and their rounds (run_state.h), under one
//   lock, state_.mu;
// - expiries_: the deadlines to check (ExpiryQueue), with expiry_thread_;
// - commits_: finalized rounds on their way to the store, in order
//   (CommitPipeline);
// - watches: RunWatchImpl, registered with their run.
//
// The methods are defined by concern: reports and the round state machine in
// aggregator.cc, registration, finishing, deletion and retention in
// run_lifecycle.cc, queries and watches in run_queries.cc.
//
// Locks: lifecycle_mu_ (one registration, finish or deletion at a time) before
// state_.mu before the pipeline's own. Callbacks run with none held.
#ifndef GRADNORM_SERVER_CORE_INTERNAL_AGGREGATOR_IMPL_H_
#define GRADNORM_SERVER_CORE_INTERNAL_AGGREGATOR_IMPL_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/aggregator.h"
#include "server/core/internal/commit_pipeline.h"
#include "server/core/internal/expiry_queue.h"
#include "server/core/internal/run_registry.h"
#include "server/core/internal/run_state.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

class AggregatorImpl final : public Aggregator {
 public:
  AggregatorImpl(const AggregatorOptions& options, TelemetryStore* store,
                 Clock* clock);
  ~AggregatorImpl() override { Shutdown().IgnoreError(); }

  // Loads the store's index (RunRegistry::Load).
  absl::Status Load();
  void StartExpiryThread();
  void StartRetentionThread();

  absl::StatusOr<v1::RegisterRunResponse> RegisterRun(
      const v1::RegisterRunRequest& request) override;
  void Report(const v1::ReportRequest& request, absl::Time deadline,
              ReportCallback done) override;
  void ExpireRounds() override;
  v1::ListRunsResponse ListRuns() const override;
  absl::StatusOr<v1::RunInfo> GetRun(absl::string_view run_id) const override;
  absl::StatusOr<v1::GetHistoryResponse> GetHistory(
      const v1::GetHistoryRequest& request) const override;
  absl::StatusOr<v1::GetSummaryResponse> GetSummary(
      const v1::GetSummaryRequest& request) const override;
  absl::StatusOr<std::vector<v1::RoundResult>> GetRounds(
      absl::string_view run_id, uint64_t from_step, uint64_t to_step,
      uint32_t limit) const override;
  absl::StatusOr<std::unique_ptr<RoundWatch>> Watch(
      absl::string_view run_id, uint64_t from_step,
      std::function<void()> on_ready) override;
  absl::StatusOr<v1::FinishRunResponse> FinishRun(
      absl::string_view run_id) override;
  absl::StatusOr<v1::DeleteRunResponse> DeleteRun(
      absl::string_view run_id) override {
    return DeleteRun(run_id, "request");
  }
  int ApplyRetention() override;
  AggregatorStats Stats() const override;
  absl::Status Shutdown() override;

 private:
  // A run to change: UNAVAILABLE when shutting down, else RunRegistry::Find.
  absl::StatusOr<Run*> MutableRunLocked(absl::string_view run_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);
  // Whether `expiry`'s round (and waiter) still wait.
  bool LiveExpiryLocked(const Expiry& expiry) const
      ABSL_SHARED_LOCKS_REQUIRED(state_.mu);
  void PushExpiryLocked(Expiry expiry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);

  // Handles a report, or sets *fetch (and leaves `done` alone) when its step
  // was stored before start and must be read back first (FetchRound).
  void ReportLocked(const v1::ReportRequest& request, absl::Time deadline,
                    ReportCallback& done, std::vector<Call>* calls,
                    bool* finalized, bool* fetch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);
  // Reads a round stored before start into its run's `finished`.
  absl::Status FetchRound(const std::string& run_id, uint64_t step)
      ABSL_LOCKS_EXCLUDED(state_.mu);
  // Combines the round's partials, lets the run's policies decide, and marks
  // the round committing; returns the record for the store.
  RoundRecord FinalizeLocked(Run& run, uint64_t step, OpenRound& round,
                             uint32_t last_participant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);
  // The store's verdict on a finalized round: its waiters are answered.
  void OnCommitted(const std::string& run_id, uint64_t step,
                   absl::Time appended, absl::Status status)
      ABSL_LOCKS_EXCLUDED(state_.mu);
  // Abandons the open round at `it` (not committing): its waiters get
  // `error`, the step is remembered with `why` and added to `abandoned`
  // for the store.
  void AbandonRoundLocked(Run& run, std::map<uint64_t, OpenRound>::iterator it,
                          const std::string& why, const absl::Status& error,
                          std::vector<Call>* calls,
                          std::vector<AbandonedStep>* abandoned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);
  // Abandons every open round of `run` that is not being committed.
  void AbandonOpenRoundsLocked(Run& run, const std::string& why,
                               const absl::Status& error,
                               std::vector<Call>* calls,
                               std::vector<AbandonedStep>* abandoned)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(state_.mu);

  // DeleteRun, logged with `cause` ("request" or "retention").
  absl::StatusOr<v1::DeleteRunResponse> DeleteRun(absl::string_view run_id,
                                                  absl::string_view cause)
      ABSL_LOCKS_EXCLUDED(lifecycle_mu_, state_.mu);
  // Refuses a registration that cannot proceed; the response when the run is
  // already registered with the same config; nullopt for a new run.
  absl::StatusOr<std::optional<v1::RegisterRunResponse>>
  CheckRegistrationLocked(const std::string& run_id,
                          const v1::RunConfig& config) const
      ABSL_SHARED_LOCKS_REQUIRED(state_.mu);
  void LogRegistered(const v1::RegisterRunResponse& response) const;

  // The run's committed rounds over [from_step, to_step] (to_step 0: the
  // last), read from the store; `*participants` is the run's.
  absl::StatusOr<std::vector<RoundRecord>> ReadRange(
      absl::string_view run_id, uint64_t from_step, uint64_t to_step,
      bool with_participants, uint32_t* participants, uint64_t limit = 0) const
      ABSL_LOCKS_EXCLUDED(state_.mu);

  const AggregatorOptions options_;
  TelemetryStore* const store_;
  Clock* const clock_;

  // Serializes registrations, finishes and deletions: a run's stored record
  // changes one way at a time.
  absl::Mutex lifecycle_mu_ ABSL_ACQUIRED_BEFORE(state_.mu);

  mutable AggregatorState state_;
  ExpiryQueue expiries_ ABSL_GUARDED_BY(state_.mu);
  uint64_t next_waiter_id_ ABSL_GUARDED_BY(state_.mu) = 1;
  uint64_t waiters_ ABSL_GUARDED_BY(state_.mu) = 0;
  // The first commit failure; the coordinator then refuses reports, since a
  // round it cannot store is a round it must not acknowledge.
  absl::Status store_error_ ABSL_GUARDED_BY(state_.mu);

  CommitPipeline commits_;

  std::thread expiry_thread_;
  std::thread retention_thread_;
};

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_INTERNAL_AGGREGATOR_IMPL_H_
