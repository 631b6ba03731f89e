#include "server/core/history.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::ElementsAre;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Steps 0..9 with totals 1 2 3 4 100 NaN 5 6 7 8; step 4 is clipped, step 5
// skipped. Three participants: 0 arrives first, 1 after 0.2 s (1.0 s at step
// 4, where it is the slowest), 2 after 0.5 s (the slowest elsewhere).
std::vector<RoundRecord> TenRounds() {
  const double totals[] = {1, 2, 3, 4, 100, kNaN, 5, 6, 7, 8};
  std::vector<RoundRecord> rounds;
  for (uint64_t step = 0; step < 10; ++step) {
    RoundRecord r;
    r.sequence = step + 1;
    r.result.set_run_id("r");
    r.result.set_step(step);
    r.result.set_total_norm(totals[step]);
    r.result.set_action(step == 4   ? v1::ACTION_CLIP
                        : step == 5 ? v1::ACTION_SKIP
                                    : v1::ACTION_NONE);
    if (step == 5) r.result.set_reason(v1::REASON_NONFINITE);
    // The threshold of an adaptive policy, moving.
    r.result.set_effective_max_norm(10 + step);
    const double lag1 = step == 4 ? 1.0 : 0.2;
    r.result.set_arrival_spread_seconds(step == 4 ? 1.0 : 0.5);
    r.result.set_slowest_participant(step == 4 ? 1 : 2);
    r.result.set_finalized_unix_micros(1'000'000 * (100 + step));
    r.participants = {{1, 0.0, 0}, {1, lag1, 0}, {1, 0.5, 0}};
    rounds.push_back(r);
  }
  return rounds;
}

std::vector<const RoundRecord*> Pointers(const std::vector<RoundRecord>& v) {
  std::vector<const RoundRecord*> out;
  for (const RoundRecord& r : v) out.push_back(&r);
  return out;
}

TEST(ResolveStepRangeTest, ZeroMeansLastStep) {
  EXPECT_EQ(ResolveStepRange(3, 0, 42)->to, 42u);
  EXPECT_EQ(ResolveStepRange(3, 0, 42)->from, 3u);
  EXPECT_EQ(ResolveStepRange(3, 7, 42)->to, 7u);
  absl::StatusOr<StepRange> bad = ResolveStepRange(8, 7, 42);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(),
            "from_step 8 > to_step 7; expected from_step <= to_step (to_step "
            "0 means the last step)");
}

TEST(BuildHistoryTest, DownsamplesKeepingExtremes) {
  std::vector<RoundRecord> rounds = TenRounds();
  // 10 steps in 3 buckets: 4 steps each, the last one short.
  v1::GetHistoryResponse h = BuildHistory(Pointers(rounds), {0, 9}, 3);
  EXPECT_TRUE(h.downsampled());
  ASSERT_EQ(h.buckets_size(), 3);
  const v1::HistoryBucket& b0 = h.buckets(0);
  EXPECT_EQ(b0.first_step(), 0u);
  EXPECT_EQ(b0.last_step(), 3u);
  EXPECT_EQ(b0.rounds(), 4u);
  EXPECT_EQ(b0.min_norm(), 1);
  EXPECT_EQ(b0.max_norm(), 4);
  EXPECT_EQ(b0.mean_norm(), 2.5);
  EXPECT_EQ(b0.last_norm(), 4);
  EXPECT_EQ(b0.clipped(), 0u);
  EXPECT_EQ(b0.skipped(), 0u);
  EXPECT_EQ(b0.skipped_nonfinite(), 0u);
  EXPECT_EQ(b0.max_arrival_spread_seconds(), 0.5);
  const v1::HistoryBucket& b1 = h.buckets(1);
  EXPECT_EQ(b1.first_step(), 4u);
  EXPECT_EQ(b1.last_step(), 7u);
  EXPECT_EQ(b1.rounds(), 4u);
  EXPECT_EQ(b1.min_norm(), 5);
  EXPECT_EQ(b1.max_norm(), 100);  // The spike survives downsampling.
  EXPECT_EQ(b1.mean_norm(), 37);  // (100 + 5 + 6) / 3: NaN is left out.
  EXPECT_EQ(b1.last_norm(), 6);
  EXPECT_EQ(b1.clipped(), 1u);
  EXPECT_EQ(b1.skipped(), 1u);
  EXPECT_EQ(b1.skipped_nonfinite(), 1u);
  EXPECT_EQ(b1.skipped_spike(), 0u);
  EXPECT_EQ(b1.effective_max_norm(), 17);  // Its last round's.
  EXPECT_EQ(b1.max_arrival_spread_seconds(), 1.0);
  EXPECT_EQ(b1.first_finalized_unix_micros(), 104'000'000);
  EXPECT_EQ(b1.last_finalized_unix_micros(), 107'000'000);
  const v1::HistoryBucket& b2 = h.buckets(2);
  EXPECT_EQ(b2.first_step(), 8u);
  EXPECT_EQ(b2.last_step(), 9u);
  EXPECT_EQ(b2.mean_norm(), 7.5);
}

TEST(BuildHistoryTest, OneBucketPerRoundWithoutDownsampling) {
  std::vector<RoundRecord> rounds = TenRounds();
  for (uint32_t max_points : {0u, 10u, 1000u}) {
    v1::GetHistoryResponse h =
        BuildHistory(Pointers(rounds), {0, 9}, max_points);
    EXPECT_FALSE(h.downsampled());
    ASSERT_EQ(h.buckets_size(), 10);
    EXPECT_TRUE(std::isnan(h.buckets(5).min_norm()));
    EXPECT_TRUE(std::isnan(h.buckets(5).mean_norm()));
    EXPECT_TRUE(std::isnan(h.buckets(5).last_norm()));
    EXPECT_EQ(h.buckets(5).skipped(), 1u);
  }
  EXPECT_EQ(BuildHistory({}, {0, 9}, 5).buckets_size(), 0);
}

TEST(BuildHistoryTest, TellsSpikeSkipsFromNonFiniteOnes) {
  std::vector<RoundRecord> rounds = TenRounds();
  rounds[4].result.set_action(v1::ACTION_SKIP);
  rounds[4].result.set_reason(v1::REASON_SPIKE);
  v1::GetHistoryResponse h = BuildHistory(Pointers(rounds), {0, 9}, 1);
  ASSERT_EQ(h.buckets_size(), 1);
  EXPECT_EQ(h.buckets(0).skipped(), 2u);
  EXPECT_EQ(h.buckets(0).skipped_spike(), 1u);
  EXPECT_EQ(h.buckets(0).skipped_nonfinite(), 1u);
}

TEST(BuildHistoryTest, BucketsAreStepRangesAndEmptyOnesAreLeftOut) {
  std::vector<RoundRecord> rounds = TenRounds();
  rounds.erase(rounds.begin() + 2, rounds.begin() + 6);  // Steps 2..5 gone.
  // Steps 0..9 in buckets of 2: {0,1} {6,7} {8,9}; {2,3} and {4,5} empty.
  v1::GetHistoryResponse h = BuildHistory(Pointers(rounds), {0, 9}, 5);
  ASSERT_EQ(h.buckets_size(), 3);
  EXPECT_EQ(h.buckets(1).first_step(), 6u);
  EXPECT_EQ(h.buckets(1).last_step(), 7u);
  EXPECT_EQ(h.buckets(1).rounds(), 2u);
}

TEST(PlanHistoryTest, WidthsAndBlockAlignment) {
  // A bucket per round.
  HistoryPlan per_round = PlanHistory({5, 100}, 0);
  EXPECT_EQ(per_round.width, 1u);
  EXPECT_FALSE(per_round.blocks);
  // Narrow buckets: from the rounds, starting at `from`.
  HistoryPlan narrow = PlanHistory({5, 1004}, 100);
  EXPECT_EQ(narrow.base, 5u);
  EXPECT_EQ(narrow.width, 10u);
  EXPECT_FALSE(narrow.blocks);
  // A million steps in 1000 buckets: whole blocks, aligned.
  HistoryPlan wide = PlanHistory({10, 1'000'009}, 1000);
  EXPECT_TRUE(wide.blocks);
  EXPECT_EQ(wide.base, 0u);
  EXPECT_EQ(wide.width % kHistoryBlockSteps, 0u);
  EXPECT_EQ(wide.width, 1024u);
  EXPECT_LE((1'000'009 - wide.base) / wide.width + 1, 1000u);
  // Every step there is: no overflow.
  HistoryPlan all = PlanHistory({0, UINT64_MAX}, 1000);
  EXPECT_TRUE(all.blocks);
  EXPECT_LE(UINT64_MAX / all.width + 1, 1000u);
  HistoryPlan one = PlanHistory({0, UINT64_MAX}, 1);
  EXPECT_EQ(one.width, 0u);  // One bucket.
  EXPECT_TRUE(one.blocks);
  EXPECT_FALSE(PlanHistory({0, 63}, 1).blocks);
}

TEST(BuildSummaryTest, HandComputed) {
  std::vector<RoundRecord> rounds = TenRounds();
  v1::GetSummaryResponse s = BuildSummary(Pointers(rounds), 3, 2);
  EXPECT_EQ(s.rounds(), 10u);
  // Finite totals sorted: 1 2 3 4 5 6 7 8 100 (n = 9).
  EXPECT_EQ(s.p50_norm(), 5);    // rank ceil(4.5) = 5
  EXPECT_EQ(s.p90_norm(), 100);  // rank ceil(8.1) = 9
  EXPECT_EQ(s.p99_norm(), 100);
  EXPECT_EQ(s.min_norm(), 1);
  EXPECT_EQ(s.max_norm(), 100);
  EXPECT_EQ(s.mean_norm(), 136.0 / 9);
  EXPECT_EQ(s.clipped_fraction(), 0.1);
  EXPECT_THAT(s.skipped_steps(), ElementsAre(5u));
  EXPECT_EQ(s.skipped_count(), 1u);
  ASSERT_EQ(s.slowest_participants_size(), 2);
  EXPECT_EQ(s.slowest_participants(0).participant(), 2u);
  EXPECT_EQ(s.slowest_participants(0).times_slowest(), 9u);
  EXPECT_EQ(s.slowest_participants(0).mean_lag_seconds(), 0.5);
  EXPECT_EQ(s.slowest_participants(0).max_lag_seconds(), 0.5);
  EXPECT_EQ(s.slowest_participants(1).participant(), 1u);
  EXPECT_EQ(s.slowest_participants(1).times_slowest(), 1u);
  EXPECT_DOUBLE_EQ(s.slowest_participants(1).mean_lag_seconds(), 0.28);
  EXPECT_EQ(s.slowest_participants(1).max_lag_seconds(), 1.0);
}

TEST(BuildSummaryTest, DefaultTopSlowestAndEmptyRange) {
  std::vector<RoundRecord> rounds = TenRounds();
  EXPECT_EQ(BuildSummary(Pointers(rounds), 3, 0).slowest_participants_size(),
            3);  // Default 5, but only 3 participants.
  v1::GetSummaryResponse empty = BuildSummary({}, 3, 0);
  EXPECT_EQ(empty.rounds(), 0u);
  EXPECT_TRUE(std::isnan(empty.p50_norm()));
  EXPECT_TRUE(std::isnan(empty.mean_norm()));
  EXPECT_EQ(empty.clipped_fraction(), 0);
  EXPECT_EQ(empty.slowest_participants_size(), 0);
}

TEST(BuildSummaryTest, ListsAtMostAThousandSkippedSteps) {
  std::vector<RoundRecord> rounds(1500);
  for (uint64_t i = 0; i < rounds.size(); ++i) {
    rounds[i].result.set_step(i);
    rounds[i].result.set_total_norm(kNaN);
    rounds[i].result.set_action(v1::ACTION_SKIP);
    rounds[i].participants = {{kNaN, 0, 0}};
  }
  v1::GetSummaryResponse s = BuildSummary(Pointers(rounds), 1, 1);
  EXPECT_EQ(s.skipped_count(), 1500u);
  ASSERT_EQ(s.skipped_steps_size(), 1000);
  EXPECT_EQ(s.skipped_steps(999), 999u);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
