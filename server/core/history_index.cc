#include "server/core/history_index.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace gradnorm {
namespace server {

void RoundSummary::Add(const IndexedRound& round) {
  RoundSummary one;
  one.rounds = 1;
  if (std::isfinite(round.total_norm)) {
    one.finite = 1;
    one.sum = one.min = one.max = round.total_norm;
  }
  one.first_step = one.last_step = round.step;
  one.last_norm = round.total_norm;
  one.effective_max_norm = round.effective_max_norm;
  one.first_finalized_unix_micros = one.last_finalized_unix_micros =
      round.finalized_unix_micros;
  one.clipped = round.action == v1::ACTION_CLIP;
  const bool skipped = round.action == v1::ACTION_SKIP;
  one.skipped = skipped;
  one.skipped_nonfinite = skipped && round.reason == v1::REASON_NONFINITE;
  one.skipped_spike = skipped && round.reason == v1::REASON_SPIKE;
  one.max_arrival_spread_seconds = round.arrival_spread_seconds;
  Merge(one);
}

void RoundSummary::Merge(const RoundSummary& other) {
  if (other.rounds == 0) return;
  if (rounds == 0) {
    *this = other;
    return;
  }
  if (other.finite > 0) {
    min = finite == 0 ? other.min : std::min(min, other.min);
    max = finite == 0 ? other.max : std::max(max, other.max);
    sum += other.sum;
    finite += other.finite;
  }
  if (other.first_step < first_step) {
    first_step = other.first_step;
    first_finalized_unix_micros = other.first_finalized_unix_micros;
  }
  if (other.last_step > last_step) {
    last_step = other.last_step;
    last_norm = other.last_norm;
    effective_max_norm = other.effective_max_norm;
    last_finalized_unix_micros = other.last_finalized_unix_micros;
  }
  rounds += other.rounds;
  clipped += other.clipped;
  skipped += other.skipped;
  skipped_nonfinite += other.skipped_nonfinite;
  skipped_spike += other.skipped_spike;
  max_arrival_spread_seconds =
      std::max(max_arrival_spread_seconds, other.max_arrival_spread_seconds);
}

void RoundSummary::ToBucket(v1::HistoryBucket* bucket) const {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  bucket->set_first_step(first_step);
  bucket->set_last_step(last_step);
  bucket->set_rounds(rounds);
  bucket->set_min_norm(finite > 0 ? min : kNaN);
  bucket->set_max_norm(finite > 0 ? max : kNaN);
  bucket->set_mean_norm(finite > 0 ? sum / finite : kNaN);
  bucket->set_last_norm(last_norm);
  bucket->set_clipped(clipped);
  bucket->set_skipped(skipped);
  bucket->set_max_arrival_spread_seconds(max_arrival_spread_seconds);
  bucket->set_first_finalized_unix_micros(first_finalized_unix_micros);
  bucket->set_last_finalized_unix_micros(last_finalized_unix_micros);
  bucket->set_effective_max_norm(effective_max_norm);
  bucket->set_skipped_nonfinite(skipped_nonfinite);
  bucket->set_skipped_spike(skipped_spike);
}

void HistoryIndex::Add(const IndexedRound& round) {
  blocks_[round.step / kHistoryBlockSteps].Add(round);
}

std::vector<RoundSummary> HistoryIndex::Blocks(uint64_t first_block,
                                               uint64_t end_block) const {
  std::vector<RoundSummary> out;
  for (auto it = blocks_.lower_bound(first_block);
       it != blocks_.end() && it->first < end_block; ++it) {
    out.push_back(it->second);
  }
  return out;
}

}  // namespace server
}  // namespace gradnorm
