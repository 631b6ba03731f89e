// The Aggregator's queries and watches: they read runs under the lock and
// rounds from the store without it (see internal/aggregator_impl.h).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "server/core/history.h"
#include "server/core/internal/aggregator_impl.h"
#include "server/core/internal/run_watch.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {
namespace {

std::vector<const RoundRecord*> Pointers(
    const std::vector<RoundRecord>& rounds) {
  std::vector<const RoundRecord*> pointers;
  pointers.reserve(rounds.size());
  for (const RoundRecord& round : rounds) pointers.push_back(&round);
  return pointers;
}

}  // namespace

v1::ListRunsResponse AggregatorImpl::ListRuns() const {
  absl::ReaderMutexLock lock(&state_.mu);
  v1::ListRunsResponse response;
  for (const auto& [id, run] : state_.runs.runs()) {
    *response.add_runs() = run->Info();
  }
  return response;
}

absl::StatusOr<v1::RunInfo> AggregatorImpl::GetRun(
    absl::string_view run_id) const {
  absl::ReaderMutexLock lock(&state_.mu);
  absl::StatusOr<Run*> run = state_.runs.Find(run_id);
  if (!run.ok()) return run.status();
  return (*run)->Info();
}

absl::StatusOr<std::vector<RoundRecord>> AggregatorImpl::ReadRange(
    absl::string_view run_id, uint64_t from_step, uint64_t to_step,
    bool with_participants, uint32_t* participants, uint64_t limit) const {
  StepRange range;
  {
    absl::ReaderMutexLock lock(&state_.mu);
    absl::StatusOr<Run*> run = state_.runs.Find(run_id);
    if (!run.ok()) return run.status();
    const uint64_t last = (*run)->rounds > 0 ? (*run)->last_step : 0;
    absl::StatusOr<StepRange> resolved =
        ResolveStepRange(from_step, to_step, last);
    if (!resolved.ok()) return resolved.status();
    range = *resolved;
    *participants = (*run)->info.config.participants();
  }
  // The store has every committed round; reading it takes no lock of ours,
  // so rounds go on meanwhile.
  return store_->ReadRounds(std::string(run_id), range.from, range.to, limit,
                            with_participants);
}

absl::StatusOr<v1::GetHistoryResponse> AggregatorImpl::GetHistory(
    const v1::GetHistoryRequest& request) const {
  uint32_t participants = 0;
  // A history needs no participants: their BLOBs are not read.
  absl::StatusOr<std::vector<RoundRecord>> rounds =
      ReadRange(request.run_id(), request.from_step(), request.to_step(),
                /*with_participants=*/false, &participants);
  if (!rounds.ok()) return rounds.status();
  return BuildHistory(Pointers(*rounds), request.max_points());
}

absl::StatusOr<v1::GetSummaryResponse> AggregatorImpl::GetSummary(
    const v1::GetSummaryRequest& request) const {
  uint32_t participants = 0;
  absl::StatusOr<std::vector<RoundRecord>> rounds =
      ReadRange(request.run_id(), request.from_step(), request.to_step(),
                /*with_participants=*/true, &participants);
  if (!rounds.ok()) return rounds.status();
  return BuildSummary(Pointers(*rounds), participants, request.top_slowest());
}

absl::StatusOr<std::vector<v1::RoundResult>> AggregatorImpl::GetRounds(
    absl::string_view run_id, uint64_t from_step, uint64_t to_step,
    uint32_t limit) const {
  if (limit == 0) {
    return absl::InvalidArgumentError(
        "a page of rounds needs a limit of at least 1");
  }
  uint32_t participants = 0;
  absl::StatusOr<std::vector<RoundRecord>> rounds =
      ReadRange(run_id, from_step, to_step, /*with_participants=*/false,
                &participants, limit);
  if (!rounds.ok()) return rounds.status();
  std::vector<v1::RoundResult> results;
  results.reserve(rounds->size());
  for (RoundRecord& round : *rounds) {
    results.push_back(std::move(round.result));
  }
  return results;
}

absl::StatusOr<std::unique_ptr<RoundWatch>> AggregatorImpl::Watch(
    absl::string_view run_id, uint64_t from_step,
    std::function<void()> on_ready) {
  absl::MutexLock lock(&state_.mu);
  absl::StatusOr<Run*> run = MutableRunLocked(run_id);
  if (!run.ok()) return run.status();
  return std::unique_ptr<RoundWatch>(std::make_unique<RunWatchImpl>(
      &state_, store_, **run, from_step, std::move(on_ready)));
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
