#include "server/core/internal/run_registry.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/core/run_config.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

absl::Status RunRegistry::Load(StoreIndex index) {
  for (RunRecord& record : index.runs) Add(std::move(record));
  for (const auto& [run_id, rounds] : index.rounds) {
    Run* run = Get(run_id);
    if (run == nullptr) {
      return absl::DataLossError(absl::StrCat("the store holds ", rounds.size(),
                                              " rounds of run ", run_id,
                                              " but no such run"));
    }
    run->stored_steps.reserve(rounds.size());
    for (const IndexedRound& round : rounds) {
      // Replaying in finalization order rebuilds the policies' state exactly.
      run->policy.Observe(round.total_norm, round.action);
      run->next_sequence = std::max(run->next_sequence, round.sequence + 1);
      run->stored_steps.push_back(round.step);
      run->history.Add(round);
      run->CountRound(round.step);
    }
    std::sort(run->stored_steps.begin(), run->stored_steps.end());
  }
  for (AbandonedStep& step : index.abandoned) {
    Run* run = Get(step.run_id);
    if (run == nullptr) {
      return absl::DataLossError(absl::StrCat("the store holds abandoned ",
                                              RoundName(step.run_id, step.step),
                                              " but no such run"));
    }
    run->abandoned[step.step] = std::move(step.why);
  }
  return absl::OkStatus();
}

absl::StatusOr<Run*> RunRegistry::Find(absl::string_view run_id) {
  if (absl::Status status = ValidateRunId(run_id); !status.ok()) return status;
  Run* run = Get(run_id);
  if (run == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("run ", run_id,
                     " is not registered; register it with RegisterRun first"));
  }
  if (run->deleting) {
    return absl::NotFoundError(
        absl::StrCat("run ", run_id, " is being deleted"));
  }
  return run;
}

Run* RunRegistry::Get(absl::string_view run_id) const {
  auto it = runs_.find(run_id);
  return it == runs_.end() ? nullptr : it->second.get();
}

Run& RunRegistry::Add(RunRecord record) {
  std::string id = record.run_id;
  auto run = std::make_unique<Run>(std::move(record), next_incarnation_++);
  Run& added = *run;
  runs_.emplace(std::move(id), std::move(run));
  return added;
}

void RunRegistry::Erase(absl::string_view run_id) {
  auto it = runs_.find(run_id);
  if (it != runs_.end()) runs_.erase(it);
}

size_t RunRegistry::CountUnfinished() const {
  return std::count_if(runs_.begin(), runs_.end(), [](const auto& entry) {
    return !entry.second->is_finished();
  });
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
