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

#include "absl/status/statusor.h"
#include "gradnorm/v1/coordinator.pb.h"
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

// Splits `rounds` (step order) into at most `max_points` buckets of
// consecutive rounds (0: one bucket per round) whose sizes differ by at most
// one, larger buckets first, and summarizes each: min, max and mean of its
// finite totals (NaN when none is finite), the last round's total, CLIP and
// SKIP counts and the largest arrival spread. `downsampled` is true when a
// bucket holds more than one round.
v1::GetHistoryResponse BuildHistory(
    const std::vector<const RoundRecord*>& rounds, uint32_t max_points);

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
