#include "server/core/history_index.h"

#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

IndexedRound Round(uint64_t step, double total,
                   v1::Action action = v1::ACTION_NONE,
                   v1::Reason reason = v1::REASON_WITHIN_MAX_NORM) {
  IndexedRound r;
  r.step = step;
  r.total_norm = total;
  r.action = action;
  r.reason = reason;
  r.effective_max_norm = 10 + step;
  r.arrival_spread_seconds = 0.001 * step;
  r.finalized_unix_micros = 1000 + step;
  return r;
}

TEST(RoundSummaryTest, MergeInAnyOrderEqualsAddingEachRound) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  RoundSummary all, left, right;
  const IndexedRound rounds[] = {
      Round(3, 2.0), Round(4, nan, v1::ACTION_SKIP, v1::REASON_NONFINITE),
      Round(7, 50.0, v1::ACTION_SKIP, v1::REASON_SPIKE),
      Round(9, 1.0, v1::ACTION_CLIP, v1::REASON_ABOVE_MAX_NORM)};
  for (const IndexedRound& r : rounds) all.Add(r);
  left.Add(rounds[2]);
  left.Add(rounds[3]);
  right.Add(rounds[1]);
  right.Add(rounds[0]);
  left.Merge(right);  // The later steps first.
  for (const RoundSummary* s : {&all, &left}) {
    EXPECT_EQ(s->rounds, 4u);
    EXPECT_EQ(s->finite, 3u);
    EXPECT_EQ(s->sum, 53.0);
    EXPECT_EQ(s->min, 1.0);
    EXPECT_EQ(s->max, 50.0);
    EXPECT_EQ(s->first_step, 3u);
    EXPECT_EQ(s->last_step, 9u);
    EXPECT_EQ(s->last_norm, 1.0);
    EXPECT_EQ(s->effective_max_norm, 19.0);
    EXPECT_EQ(s->first_finalized_unix_micros, 1003);
    EXPECT_EQ(s->last_finalized_unix_micros, 1009);
    EXPECT_EQ(s->clipped, 1u);
    EXPECT_EQ(s->skipped, 2u);
    EXPECT_EQ(s->skipped_nonfinite, 1u);
    EXPECT_EQ(s->skipped_spike, 1u);
    EXPECT_EQ(s->max_arrival_spread_seconds, 0.001 * 9);
  }
  v1::HistoryBucket bucket;
  all.ToBucket(&bucket);
  EXPECT_EQ(bucket.mean_norm(), 53.0 / 3);
  EXPECT_EQ(bucket.rounds(), 4u);
}

TEST(RoundSummaryTest, NoFiniteTotalGivesNaN) {
  RoundSummary s;
  s.Add(Round(1, std::numeric_limits<double>::infinity(), v1::ACTION_SKIP,
              v1::REASON_NONFINITE));
  v1::HistoryBucket bucket;
  s.ToBucket(&bucket);
  EXPECT_TRUE(std::isnan(bucket.min_norm()));
  EXPECT_TRUE(std::isnan(bucket.mean_norm()));
  EXPECT_TRUE(std::isinf(bucket.last_norm()));
}

TEST(HistoryIndexTest, BlocksOfSixtyFourSteps) {
  HistoryIndex index;
  for (uint64_t step : {0, 63, 64, 200, 1000}) index.Add(Round(step, 1.0));
  EXPECT_EQ(index.block_count(), 4u);  // Blocks 0, 1, 3, 15.
  std::vector<RoundSummary> blocks = index.Blocks(0, 4);
  ASSERT_EQ(blocks.size(), 3u);
  EXPECT_EQ(blocks[0].rounds, 2u);
  EXPECT_EQ(blocks[0].last_step, 63u);
  EXPECT_EQ(blocks[1].first_step, 64u);
  EXPECT_EQ(blocks[2].first_step, 200u);
  EXPECT_EQ(index.Blocks(4, 15).size(), 0u);
  EXPECT_EQ(index.Blocks(15, 16).size(), 1u);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
