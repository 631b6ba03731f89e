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

v1::GetHistoryResponse BuildHistory(
    const std::vector<const RoundRecord*>& rounds, uint32_t max_points) {
  v1::GetHistoryResponse response;
  const size_t n = rounds.size();
  if (n == 0) return response;
  const size_t buckets = max_points == 0 ? n : std::min<size_t>(n, max_points);
  const size_t base = n / buckets;
  const size_t larger = n % buckets;  // The first `larger` get one more.
  size_t begin = 0;
  for (size_t b = 0; b < buckets; ++b) {
    const size_t size = base + (b < larger ? 1 : 0);
    v1::HistoryBucket* bucket = response.add_buckets();
    bucket->set_first_step(rounds[begin]->result.step());
    bucket->set_last_step(rounds[begin + size - 1]->result.step());
    bucket->set_rounds(size);
    double min = kNaN, max = kNaN, sum = 0, spread = 0;
    size_t finite = 0;
    uint32_t clipped = 0, skipped = 0, nonfinite = 0, spike = 0;
    for (size_t i = begin; i < begin + size; ++i) {
      const v1::RoundResult& r = rounds[i]->result;
      if (std::isfinite(r.total_norm())) {
        min = finite == 0 ? r.total_norm() : std::min(min, r.total_norm());
        max = finite == 0 ? r.total_norm() : std::max(max, r.total_norm());
        sum += r.total_norm();
        ++finite;
      }
      clipped += r.action() == v1::ACTION_CLIP;
      skipped += r.action() == v1::ACTION_SKIP;
      nonfinite +=
          r.action() == v1::ACTION_SKIP && r.reason() == v1::REASON_NONFINITE;
      spike += r.action() == v1::ACTION_SKIP && r.reason() == v1::REASON_SPIKE;
      spread = std::max(spread, r.arrival_spread_seconds());
    }
    bucket->set_min_norm(min);
    bucket->set_max_norm(max);
    bucket->set_mean_norm(finite == 0 ? kNaN : sum / finite);
    bucket->set_last_norm(rounds[begin + size - 1]->result.total_norm());
    bucket->set_clipped(clipped);
    bucket->set_skipped(skipped);
    bucket->set_skipped_nonfinite(nonfinite);
    bucket->set_skipped_spike(spike);
    bucket->set_effective_max_norm(
        rounds[begin + size - 1]->result.effective_max_norm());
    bucket->set_max_arrival_spread_seconds(spread);
    bucket->set_first_finalized_unix_micros(
        rounds[begin]->result.finalized_unix_micros());
    bucket->set_last_finalized_unix_micros(
        rounds[begin + size - 1]->result.finalized_unix_micros());
    if (size > 1) response.set_downsampled(true);
    begin += size;
  }
  return response;
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
