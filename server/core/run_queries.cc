// The Aggregator's queries and watches: they read runs under the lock and
// rounds from the store without it (see internal/aggregator_impl.h).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status_macros.h"
#include "server/core/history.h"
#include "server/core/history_index.h"
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

// The step range a query names over `run`'s finalized steps.
absl::StatusOr<StepRange> RangeOf(const Run& run, uint64_t from_step,
                                  uint64_t to_step) {
  return ResolveStepRange(from_step, to_step,
                          run.rounds > 0 ? run.last_step : 0);
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
    ASSIGN_OR_RETURN(range, RangeOf(**run, from_step, to_step));
    *participants = (*run)->info.config.participants();
  }
  // The store has every committed round; reading it takes no lock of ours,
  // so rounds go on meanwhile.
  return store_->ReadRounds(std::string(run_id), range.from, range.to, limit,
                            with_participants);
}

absl::StatusOr<v1::GetHistoryResponse> AggregatorImpl::GetHistory(
    const v1::GetHistoryRequest& request) const {
  StepRange range;
  HistoryPlan plan;
  std::vector<RoundSummary> blocks;
  // Under a block plan: whole blocks [first_block, end_block) come from the
  // index, the partial blocks at either end from the store.
  uint64_t first_block = 0, end_block = 0;
  {
    absl::ReaderMutexLock lock(&state_.mu);
    absl::StatusOr<Run*> run = state_.runs.Find(request.run_id());
    if (!run.ok()) return run.status();
    ASSIGN_OR_RETURN(range,
                     RangeOf(**run, request.from_step(), request.to_step()));
    plan = PlanHistory(range, request.max_points());
    if (plan.blocks) {
      first_block = range.from / kHistoryBlockSteps +
                    (range.from % kHistoryBlockSteps != 0 ? 1 : 0);
      end_block =
          range.to / kHistoryBlockSteps +
          (range.to % kHistoryBlockSteps == kHistoryBlockSteps - 1 ? 1 : 0);
      blocks = (*run)->history.Blocks(first_block, end_block);
    }
  }
  HistoryBuilder builder(plan);
  // The rounds of [from, to] from the store (participants are not read).
  auto add_rounds = [&](uint64_t from, uint64_t to) -> absl::Status {
    ASSIGN_OR_RETURN(std::vector<RoundRecord> rounds,
                     store_->ReadRounds(request.run_id(), from, to, 0,
                                        /*with_participants=*/false));
    for (const RoundRecord& round : rounds) {
      builder.Add(IndexOf(round.result, round.sequence));
    }
    return absl::OkStatus();
  };
  if (!plan.blocks) {
    RETURN_IF_ERROR(add_rounds(range.from, range.to));
    return builder.Build();
  }
  for (const RoundSummary& block : blocks) builder.Add(block);
  if (first_block > end_block) {  // One partial block: no whole one.
    RETURN_IF_ERROR(add_rounds(range.from, range.to));
    return builder.Build();
  }
  if (range.from % kHistoryBlockSteps != 0) {
    RETURN_IF_ERROR(
        add_rounds(range.from, first_block * kHistoryBlockSteps - 1));
  }
  if (range.to % kHistoryBlockSteps != kHistoryBlockSteps - 1) {
    RETURN_IF_ERROR(add_rounds(end_block * kHistoryBlockSteps, range.to));
  }
  return builder.Build();
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
