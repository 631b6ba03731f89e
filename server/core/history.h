// Telemetry queries over a run's finalized rounds: the step range, the
// downsampled history and the summary statistics of GetHistory / GetSummary
// (proto/gradnorm/v1/coordinator.proto).
//
//   absl::StatusOr<StepRange> range = ResolveStepRange(from, to, last_step);
//   std::vector<const RoundRecord*> rounds = ...;  // in range, step order
//   v1::GetHistoryResponse history = BuildHistory(rounds, max_points);
//   v1::GetSummaryResponse summary = BuildSummary(rounds, participants, 5);
//
// Thread-safety: pure functions.
#ifndef GRADNORM_SERVER_CORE_HISTORY_H_
#define GRADNORM_SERVER_CORE_HISTORY_H_

#include <cstdint>
#include <vector>

#include "absl/container/btree_map.h"
#include "absl/status/statusor.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/history_index.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

// Steps [from, to], inclusive.
struct StepRange {
  uint64_t from = 0;
  uint64_t to = 0;
};

// The range a request names: to_step 0 means the run's last finalized step
// (`last_step`; pass 0 when the run has no rounds). INVALID_ARGUMENT when
// to_step != 0 and from_step > to_step.
absl::StatusOr<StepRange> ResolveStepRange(uint64_t from_step, uint64_t to_step,
                                           uint64_t last_step);

// How GetHistory buckets a step range: bucket k holds the steps [base +
// k * width, base + (k + 1) * width - 1] that fall in the range; buckets
// without rounds are left out. max_points 0: width 1, a bucket per round.
// Otherwise width = ceil(span / max_points) steps, and when that exceeds
// kHistoryBlockSteps it is rounded up to a multiple of it and `base` down to
// a block boundary: every whole block of the HistoryIndex then falls in one
// bucket (`blocks`), and only the range's partial blocks at either end need
// their rounds. max_points 1: width 0, one bucket for the whole range. At
// most max_points buckets either way.
struct HistoryPlan {
  uint64_t base = 0;
  uint64_t width = 1;
  bool blocks = false;
};
HistoryPlan PlanHistory(StepRange range, uint32_t max_points);

// Folds rounds into the buckets of a plan.
class HistoryBuilder {
 public:
  explicit HistoryBuilder(const HistoryPlan& plan) : plan_(plan) {}
  // A round, or rounds that all fall in one bucket (a block, under a plan
  // with `blocks`).
  void Add(const RoundSummary& rounds);
  void Add(const IndexedRound& round);
  // The buckets in step order; `downsampled` when one holds several rounds.
  v1::GetHistoryResponse Build() const;

 private:
  uint64_t BucketOf(uint64_t step) const;

  const HistoryPlan plan_;
  absl::btree_map<uint64_t, RoundSummary> buckets_;  // by bucket number
};

// The history of `rounds` (in `range`, any order) under PlanHistory(range,
// max_points), from the rounds themselves: min, max and mean of the finite
// totals per bucket (NaN when none is finite), the last round's total and
// threshold, CLIP and SKIP counts (skips by reason), the largest arrival
// spread, the first and last finalization times.
v1::GetHistoryResponse BuildHistory(
    const std::vector<const RoundRecord*>& rounds, StepRange range,
    uint32_t max_points);

// Summary of `rounds` (step order): nearest-rank p50/p90/p99 (the
// ceil(q/100 * n)-th smallest), min, max and mean over the finite totals (NaN
// when none is finite); the fraction of rounds clipped; skipped steps (first
// 1000, ascending) and their count; and the `top_slowest` participants (0:
// 5) with the largest mean arrival offset (ties: lower id first), each with
// how often it arrived last and its largest offset. `participants` is the
// run's participant count.
v1::GetSummaryResponse BuildSummary(
    const std::vector<const RoundRecord*>& rounds, uint32_t participants,
    uint32_t top_slowest);

// Summaries list at most this many skipped steps.
inline constexpr int kMaxListedSkippedSteps = 1000;
inline constexpr uint32_t kDefaultTopSlowest = 5;

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_HISTORY_H_
