// The Aggregator's run lifecycle: registration, FinishRun, DeleteRun and the
// retention of finished runs (see internal/aggregator_impl.h).
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/internal/aggregator_impl.h"
#include "server/core/internal/run_watch.h"
#include "server/core/number_format.h"
#include "server/core/run_config.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

absl::StatusOr<std::optional<v1::RegisterRunResponse>>
AggregatorImpl::CheckRegistrationLocked(const std::string& run_id,
                                        const v1::RunConfig& config) const {
  if (state_.shutting_down) return absl::UnavailableError(kShuttingDown);
  if (const Run* run = state_.runs.Get(run_id); run != nullptr) {
    std::vector<std::string> diff = DiffRunConfigs(run->info.config, config);
    if (!diff.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "run ", run_id,
          " is already registered with a different config (stored -> "
          "requested): ",
          absl::StrJoin(diff, "; "),
          "; register a new run id or repeat the stored config"));
    }
    if (run->is_finished()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "run ", run_id,
          " is finished and takes no new rounds; register a new run id"));
    }
    if (run->deleting) {
      return absl::UnavailableError(absl::StrCat(
          "run ", run_id,
          " is being deleted; register it again once that is done"));
    }
    v1::RegisterRunResponse response;
    response.set_created(false);
    *response.mutable_run() = run->Info();
    return std::optional<v1::RegisterRunResponse>(std::move(response));
  }
  const size_t unfinished = state_.runs.CountUnfinished();
  if (unfinished >= options_.max_runs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this coordinator already has ", unfinished,
        " unfinished runs, its limit (max_runs ", options_.max_runs, "); run ",
        run_id, " cannot be registered until a run is finished or deleted"));
  }
  return std::optional<v1::RegisterRunResponse>();
}

absl::StatusOr<v1::RegisterRunResponse> AggregatorImpl::RegisterRun(
    const v1::RegisterRunRequest& request) {
  if (absl::Status status = ValidateRunId(request.run_id()); !status.ok()) {
    return status;
  }
  absl::StatusOr<v1::RunConfig> config =
      NormalizeRunConfig(request.config(), options_.max_participants);
  if (!config.ok()) return config.status();

  absl::MutexLock registering(&lifecycle_mu_);
  {
    absl::ReaderMutexLock lock(&state_.mu);
    absl::StatusOr<std::optional<v1::RegisterRunResponse>> existing =
        CheckRegistrationLocked(request.run_id(), *config);
    if (!existing.ok()) return existing.status();
    if (existing->has_value()) return **std::move(existing);
  }
  RunRecord record;
  record.run_id = request.run_id();
  record.config = *std::move(config);
  record.created_unix_micros = absl::ToUnixMicros(clock_->Now());
  // Outside state_.mu: reports of other runs go on while the run is made
  // durable.
  if (absl::Status status = store_->PutRun(record); !status.ok()) {
    return status;
  }
  v1::RegisterRunResponse response;
  response.set_created(true);
  {
    absl::MutexLock lock(&state_.mu);
    *response.mutable_run() = state_.runs.Add(std::move(record)).Info();
  }
  LogRegistered(response);
  return response;
}

void AggregatorImpl::LogRegistered(
    const v1::RegisterRunResponse& response) const {
  if (options_.log == nullptr) return;
  const v1::RunConfig& c = response.run().config();
  options_.log->Log(
      LogLevel::kInfo, "run_registered",
      {{"run", response.run().run_id()},
       {"participants", absl::StrCat(c.participants())},
       {"norm_type", FormatNumber(c.norm_type())},
       {"max_norm", FormatNumber(c.max_norm())},
       {"clip_policy", c.clip_policy().has_auto_clip() ? "autoclip"
                       : c.clip_policy().has_zclip()   ? "zclip"
                                                       : "static"},
       {"spike_rule", c.spike_rule().enabled() ? "on" : "off"}});
}

absl::StatusOr<v1::FinishRunResponse> AggregatorImpl::FinishRun(
    absl::string_view run_id) {
  absl::MutexLock changing(&lifecycle_mu_);
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;
  int64_t finished_at;
  {
    absl::MutexLock lock(&state_.mu);
    absl::StatusOr<Run*> run = MutableRunLocked(run_id);
    if (!run.ok()) return run.status();
    if ((*run)->is_finished()) {
      v1::FinishRunResponse response;
      *response.mutable_run() = (*run)->Info();
      return response;
    }
    // No round opens from here on: Report sees the run finished.
    finished_at = absl::ToUnixMicros(clock_->Now());
    (*run)->info.finished_unix_micros = finished_at;
    AbandonOpenRoundsLocked(
        **run, "the run was finished (FinishRun) while its round waited",
        absl::AbortedError(absl::StrCat(
            "run ", run_id,
            " was finished (FinishRun) while this round waited for "
            "participants; the step is abandoned")),
        &calls, &abandoned);
  }
  // Durable before anyone is told, outside the lock (rounds of other runs go
  // on meanwhile).
  absl::Status stored = store_->FinishRun(std::string(run_id), finished_at);
  absl::Status abandoned_stored;
  for (const AbandonedStep& step : abandoned) {
    absl::Status s = store_->PutAbandonedStep(step);
    if (abandoned_stored.ok()) abandoned_stored = s;
  }
  std::vector<std::function<void()>> ready;
  v1::FinishRunResponse response;
  {
    absl::MutexLock lock(&state_.mu);
    Run& run = *state_.runs.Get(run_id);
    if (!stored.ok()) {
      run.info.finished_unix_micros = 0;
    } else {
      if (run.open.empty()) WakeWatches(run, std::nullopt, &ready);
      *response.mutable_run() = run.Info();
      response.set_abandoned_rounds(abandoned.size());
    }
  }
  RunCallbacks(calls, ready);
  if (!stored.ok()) return stored;
  if (options_.log != nullptr) {
    LogFields fields = {{"run", std::string(run_id)},
                        {"rounds", absl::StrCat(response.run().rounds())},
                        {"abandoned_rounds", absl::StrCat(abandoned.size())}};
    if (!abandoned_stored.ok()) {
      fields.emplace_back("store_error", abandoned_stored.ToString());
    }
    options_.log->Log(LogLevel::kInfo, "run_finished", fields);
  }
  return response;
}

absl::StatusOr<v1::DeleteRunResponse> AggregatorImpl::DeleteRun(
    absl::string_view run_id, absl::string_view cause) {
  absl::MutexLock changing(&lifecycle_mu_);
  std::vector<Call> calls;
  std::vector<AbandonedStep> abandoned;  // Deleted with the run.
  std::vector<std::function<void()>> ready;
  {
    absl::MutexLock lock(&state_.mu);
    absl::StatusOr<Run*> run = MutableRunLocked(run_id);
    if (!run.ok()) return run.status();
    // Reports and queries answer NOT_FOUND from here on.
    (*run)->deleting = true;
    AbandonOpenRoundsLocked(
        **run, "the run was deleted",
        absl::AbortedError(
            absl::StrCat("run ", run_id,
                         " was deleted (DeleteRun) while this round waited for "
                         "participants")),
        &calls, &abandoned);
    WakeWatches(**run, std::nullopt, &ready);
  }
  RunCallbacks(calls, ready);
  // Rounds of the run already finalized land before the delete, so none is
  // stored after it. The store's first error is not this call's.
  commits_.AwaitHandedOver();
  store_->Flush().IgnoreError();
  absl::Status deleted = store_->DeleteRun(std::string(run_id));
  v1::DeleteRunResponse response;
  {
    absl::MutexLock lock(&state_.mu);
    Run& run = *state_.runs.Get(run_id);
    if (!deleted.ok()) {
      run.deleting = false;
      return deleted;
    }
    response.set_rounds(run.rounds);
    // Watches still open hold only the run's id and incarnation.
    state_.runs.Erase(run_id);
  }
  if (options_.log != nullptr) {
    options_.log->Log(LogLevel::kInfo, "run_deleted",
                      {{"run", std::string(run_id)},
                       {"rounds", absl::StrCat(response.rounds())},
                       {"cause", std::string(cause)}});
  }
  return response;
}

int AggregatorImpl::ApplyRetention() {
  if (options_.retain_finished_runs == absl::InfiniteDuration()) return 0;
  std::vector<std::string> expired;
  {
    absl::ReaderMutexLock lock(&state_.mu);
    const int64_t cutoff =
        absl::ToUnixMicros(clock_->Now() - options_.retain_finished_runs);
    for (const auto& [id, run] : state_.runs.runs()) {
      if (run->is_finished() && !run->deleting &&
          run->info.finished_unix_micros <= cutoff) {
        expired.push_back(id);
      }
    }
  }
  int deleted = 0;
  // One run at a time: each holds only its own rounds up.
  for (const std::string& id : expired) {
    absl::StatusOr<v1::DeleteRunResponse> result = DeleteRun(id, "retention");
    if (result.ok()) {
      ++deleted;
    } else if (options_.log != nullptr &&
               result.status().code() != absl::StatusCode::kUnavailable) {
      options_.log->Log(LogLevel::kWarning, "retention_failed",
                        {{"run", id}, {"error", result.status().ToString()}});
    }
  }
  return deleted;
}

void AggregatorImpl::StartRetentionThread() {
  if (options_.retain_finished_runs == absl::InfiniteDuration() ||
      options_.retention_interval <= absl::ZeroDuration()) {
    return;
  }
  retention_thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&state_.mu);
        auto stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(state_.mu) {
          return state_.shutting_down;
        };
        state_.mu.AwaitWithTimeout(absl::Condition(&stopping),
                                   options_.retention_interval);
        if (state_.shutting_down) return;
      }
      ApplyRetention();
    }
  });
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
