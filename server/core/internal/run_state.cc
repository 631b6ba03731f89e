#include "server/core/internal/run_state.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/number_format.h"

namespace gradnorm {
namespace server {
namespace aggregator_internal {

void RunCallbacks(std::vector<Call>& calls,
                  const std::vector<std::function<void()>>& ready) {
  for (Call& call : calls) call.first(std::move(call.second));
  // on_ready is called from a copy: the watch may be destroyed meanwhile.
  for (const std::function<void()>& on_ready : ready) {
    if (on_ready) on_ready();
  }
}

std::vector<uint32_t> OpenRound::Missing() const {
  std::vector<uint32_t> missing;
  for (uint32_t i = 0; i < reported.size(); ++i) {
    if (!reported[i]) missing.push_back(i);
  }
  return missing;
}

std::string OpenRound::MissingSummary() const {
  return absl::StrCat("participants ", FormatIds(Missing()), " (", count,
                      " of ", reported.size(), " reported)");
}

v1::RunInfo Run::Info() const {
  v1::RunInfo out;
  out.set_run_id(info.run_id);
  *out.mutable_config() = info.config;
  out.set_created_unix_micros(info.created_unix_micros);
  out.set_rounds(rounds);
  if (rounds > 0) out.set_last_step(last_step);
  out.set_open_rounds(open.size());
  out.set_finished(is_finished());
  out.set_finished_unix_micros(info.finished_unix_micros);
  return out;
}

absl::StatusOr<v1::RoundResult> Run::Outcome(const RoundRecord& record) const {
  const v1::RoundResult& result = record.result;
  if (!std::isfinite(result.total_norm()) &&
      info.config.nonfinite_policy() == v1::NON_FINITE_POLICY_ERROR) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the total norm of ", RoundName(info.run_id, result.step()), " is ",
        FormatNumber(result.total_norm()),
        " (a gradient was not finite) and the run's nonfinite_policy is "
        "NON_FINITE_POLICY_ERROR; the round is recorded as skipped"));
  }
  return result;
}

std::string RoundName(absl::string_view run_id, uint64_t step) {
  return absl::StrCat("step ", step, " of run ", run_id);
}

std::string FormatIds(const std::vector<uint32_t>& ids) {
  constexpr size_t kMaxItems = 16;
  std::vector<std::string> items;
  size_t i = 0;
  while (i < ids.size() && items.size() < kMaxItems) {
    size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    items.push_back(j == i ? absl::StrCat(ids[i])
                           : absl::StrCat(ids[i], "-", ids[j]));
    i = j + 1;
  }
  std::string out = absl::StrJoin(items, ", ");
  if (i < ids.size()) absl::StrAppend(&out, ", ... (", ids.size(), " in all)");
  return out;
}

}  // namespace aggregator_internal
}  // namespace server
}  // namespace gradnorm
