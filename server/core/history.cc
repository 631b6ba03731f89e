#include "server/core/history.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double NearestRank(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return kNaN;
  const size_t n = sorted.size();
  size_t rank = static_cast<size_t>(std::ceil(q * n / 100.0));
  rank = std::clamp<size_t>(rank, 1, n);
  return sorted[rank - 1];
}

}  // namespace

absl::StatusOr<StepRange> ResolveStepRange(uint64_t from_step, uint64_t to_step,
                                           uint64_t last_step) {
  if (to_step != 0 && from_step > to_step) {
    return absl::InvalidArgumentError(absl::StrCat(
        "from_step ", from_step, " > to_step ", to_step,
        "; expected from_step <= to_step (to_step 0 means the last step)"));
  }
  return StepRange{from_step, to_step == 0 ? last_step : to_step};
}

HistoryPlan PlanHistory(StepRange range, uint32_t max_points) {
  if (max_points == 0 || range.to < range.from) {
    return HistoryPlan{range.from, 1, false};
  }
  const uint64_t span_minus_one = range.to - range.from;
  if (max_points == 1) {  // Width 0: the whole range, however long.
    return HistoryPlan{range.from, 0, span_minus_one >= kHistoryBlockSteps};
  }
  // ceil(span / max_points); no overflow with max_points >= 2.
  const uint64_t width = span_minus_one / max_points + 1;
  if (width <= kHistoryBlockSteps) {
    return HistoryPlan{range.from, width, false};
  }
  const uint64_t base = range.from - range.from % kHistoryBlockSteps;
  const uint64_t steps = (range.to - base) / max_points + 1;
  const uint64_t blocks =
      steps / kHistoryBlockSteps + (steps % kHistoryBlockSteps != 0 ? 1 : 0);
  return HistoryPlan{base, blocks * kHistoryBlockSteps, true};
}

uint64_t HistoryBuilder::BucketOf(uint64_t step) const {
  return plan_.width == 0 ? 0 : (step - plan_.base) / plan_.width;
}

void HistoryBuilder::Add(const RoundSummary& rounds) {
  if (rounds.rounds == 0) return;
  buckets_[BucketOf(rounds.first_step)].Merge(rounds);
}

void HistoryBuilder::Add(const IndexedRound& round) {
  buckets_[BucketOf(round.step)].Add(round);
}

v1::GetHistoryResponse HistoryBuilder::Build() const {
  v1::GetHistoryResponse response;
  for (const auto& [number, bucket] : buckets_) {
    bucket.ToBucket(response.add_buckets());
    if (bucket.rounds > 1) response.set_downsampled(true);
  }
  return response;
}

v1::GetHistoryResponse BuildHistory(
    const std::vector<const RoundRecord*>& rounds, StepRange range,
    uint32_t max_points) {
  HistoryBuilder builder(PlanHistory(range, max_points));
  for (const RoundRecord* round : rounds) {
    builder.Add(IndexOf(round->result, round->sequence));
  }
  return builder.Build();
}

v1::GetSummaryResponse BuildSummary(
    const std::vector<const RoundRecord*>& rounds, uint32_t participants,
    uint32_t top_slowest) {
  v1::GetSummaryResponse s;
  s.set_rounds(rounds.size());
  std::vector<double> finite;
  finite.reserve(rounds.size());
  uint64_t clipped = 0;
  struct Lag {
    uint64_t times_slowest = 0;
    double sum = 0;
    double max = 0;
    uint64_t count = 0;
  };
  std::vector<Lag> lags(participants);
  for (const RoundRecord* round : rounds) {
    const v1::RoundResult& r = round->result;
    if (std::isfinite(r.total_norm())) finite.push_back(r.total_norm());
    clipped += r.action() == v1::ACTION_CLIP;
    if (r.action() == v1::ACTION_SKIP) {
      if (s.skipped_steps_size() < kMaxListedSkippedSteps) {
        s.add_skipped_steps(r.step());
      }
      s.set_skipped_count(s.skipped_count() + 1);
    }
    if (r.slowest_participant() < participants) {
      lags[r.slowest_participant()].times_slowest++;
    }
    for (size_t i = 0; i < round->participants.size() && i < participants;
         ++i) {
      const double offset = round->participants[i].arrival_offset_seconds;
      lags[i].sum += offset;
      lags[i].max = std::max(lags[i].max, offset);
      lags[i].count++;
    }
  }
  double sum = 0;
  for (double x : finite) sum += x;
  std::sort(finite.begin(), finite.end());
  s.set_p50_norm(NearestRank(finite, 50));
  s.set_p90_norm(NearestRank(finite, 90));
  s.set_p99_norm(NearestRank(finite, 99));
  s.set_min_norm(finite.empty() ? kNaN : finite.front());
  s.set_max_norm(finite.empty() ? kNaN : finite.back());
  s.set_mean_norm(finite.empty() ? kNaN : sum / finite.size());
  s.set_clipped_fraction(
      rounds.empty() ? 0.0 : static_cast<double>(clipped) / rounds.size());
  if (rounds.empty()) return s;

  std::vector<uint32_t> order(participants);
  for (uint32_t i = 0; i < participants; ++i) order[i] = i;
  auto mean = [&](uint32_t i) {
    return lags[i].count == 0 ? 0.0 : lags[i].sum / lags[i].count;
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](uint32_t a, uint32_t b) { return mean(a) > mean(b); });
  const uint32_t top = top_slowest == 0 ? kDefaultTopSlowest : top_slowest;
  for (uint32_t k = 0; k < std::min(top, participants); ++k) {
    const uint32_t i = order[k];
    v1::ParticipantLag* lag = s.add_slowest_participants();
    lag->set_participant(i);
    lag->set_times_slowest(lags[i].times_slowest);
    lag->set_mean_lag_seconds(mean(i));
    lag->set_max_lag_seconds(lags[i].max);
  }
  return s;
}

}  // namespace server
}  // namespace gradnorm
