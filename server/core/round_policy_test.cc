#include "server/core/round_policy.h"

#include <cmath>
#include <limits>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(CombinePartialsTest, SeedVectors) {
  // grads {[3,4],[1,2]} split over two participants.
  EXPECT_EQ(CombinePartials(2, {25, 5}), 5.477225575051661);
  EXPECT_EQ(CombinePartials(2, {25, 5}), std::sqrt(30.0));
  EXPECT_EQ(CombinePartials(1, {7, 3}), 10);
  EXPECT_DOUBLE_EQ(CombinePartials(3, {91, 9}), 4.641588833612778);
  EXPECT_EQ(CombinePartials(kInf, {3, 7}), 7);
  EXPECT_EQ(CombinePartials(2, {}), 0);
  EXPECT_EQ(CombinePartials(kInf, {}), 0);
}

TEST(CombinePartialsTest, NanWinsOverInfAndFinite) {
  EXPECT_TRUE(std::isnan(CombinePartials(2, {1, kNaN, kInf})));
  EXPECT_TRUE(std::isnan(CombinePartials(kInf, {kInf, 1, kNaN})));
  EXPECT_TRUE(std::isnan(CombinePartials(kInf, {kNaN, 5})));
  EXPECT_EQ(CombinePartials(2, {1, kInf}), kInf);
  EXPECT_EQ(CombinePartials(kInf, {1, kInf}), kInf);
}

TEST(CombinePartialsTest, ParticipantOrderIsTheSumOrder) {
  // (1e16 + 1) + 1 != 1e16 + (1 + 1): the order is fixed, not commutative.
  EXPECT_EQ(CombinePartials(1, {1e16, 1, 1}), (1e16 + 1) + 1);
  EXPECT_EQ(CombinePartials(1, {1, 1, 1e16}), (1.0 + 1) + 1e16);
}

v1::RunConfig Static(double max_norm) {
  v1::RunConfig config;
  config.set_max_norm(max_norm);
  config.mutable_clip_policy()->mutable_static_clip();
  return config;
}

TEST(RoundPolicyTest, SeedClipVectors) {
  RoundDecision clip = RoundPolicy(Static(1)).Decide(5);
  EXPECT_EQ(clip.action, v1::ACTION_CLIP);
  EXPECT_EQ(clip.reason, v1::REASON_ABOVE_MAX_NORM);
  EXPECT_EQ(clip.clip_coef, 1 / (5 + 1e-6));
  EXPECT_NEAR(clip.clip_coef, 0.19999996, 1e-9);
  EXPECT_EQ(clip.effective_max_norm, 1);
  EXPECT_EQ(clip.detail, "norm 5 > max_norm 1 (static)");

  RoundDecision none = RoundPolicy(Static(10)).Decide(5);
  EXPECT_EQ(none.action, v1::ACTION_NONE);
  EXPECT_EQ(none.reason, v1::REASON_WITHIN_MAX_NORM);
  EXPECT_EQ(none.clip_coef, 1);
  EXPECT_EQ(none.detail, "norm 5 <= max_norm 10 (static)");

  RoundDecision two = RoundPolicy(Static(2)).Decide(4);
  EXPECT_EQ(two.action, v1::ACTION_CLIP);
  EXPECT_EQ(two.clip_coef, 2 / 4.000001);
}

TEST(RoundPolicyTest, NonFiniteIsSkipped) {
  RoundPolicy policy(Static(1));
  for (double total : {kNaN, kInf}) {
    RoundDecision d = policy.Decide(total);
    EXPECT_EQ(d.action, v1::ACTION_SKIP);
    EXPECT_EQ(d.reason, v1::REASON_NONFINITE);
    EXPECT_EQ(d.clip_coef, 1);
    EXPECT_EQ(d.effective_max_norm, 1);
  }
  EXPECT_EQ(policy.Decide(kNaN).detail, "norm nan is not finite: step skipped");
}

v1::RunConfig WithSpikeRule(v1::RunConfig config, double sigma, uint32_t window,
                            uint32_t warmup_steps) {
  v1::SpikeRule* rule = config.mutable_spike_rule();
  rule->set_enabled(true);
  rule->set_sigma(sigma);
  rule->set_window(window);
  rule->set_warmup_steps(warmup_steps);
  return config;
}

TEST(RoundPolicyTest, SpikeIsSkippedAndEntersTheWindowAtItsThreshold) {
  RoundPolicy policy(WithSpikeRule(Static(10), /*sigma=*/2, /*window=*/4,
                                   /*warmup_steps=*/3));
  for (double total : {1.0, 2.0}) {
    EXPECT_EQ(policy.Decide(total).action, v1::ACTION_NONE);
    policy.Observe(total, v1::ACTION_NONE);
  }
  EXPECT_EQ(policy.Decide(50).action, v1::ACTION_CLIP);  // Still warming up.
  policy.Observe(3, v1::ACTION_NONE);
  // Window {1, 2, 3}: threshold 2 + 2 * sqrt(2/3) = 3.63299...
  RoundDecision spike = policy.Decide(40);
  EXPECT_EQ(spike.action, v1::ACTION_SKIP);
  EXPECT_EQ(spike.reason, v1::REASON_SPIKE);
  EXPECT_EQ(spike.clip_coef, 1);
  EXPECT_EQ(spike.detail,
            "norm 40 > spike threshold 3.632993161855452 = mean 2 + 2 * std "
            "0.816496580927726 of the last 3 steps: step skipped");
  policy.Observe(40, v1::ACTION_SKIP);
  // Window {1, 2, 3, 3.63299...}: mean 2.40824..., std 1, threshold 4.40824...
  // (with 40 itself it would be 11.5 + 2 * 16.45...).
  EXPECT_EQ(policy.Decide(4.4).action, v1::ACTION_NONE);
  RoundDecision next = policy.Decide(4.5);
  EXPECT_EQ(next.action, v1::ACTION_SKIP);
  EXPECT_THAT(next.detail, HasSubstr("spike threshold 4.40824829046386"));
}

// The norm's level rises for good (1.0 / 1.1 alternating, then 1.5 on): the
// first steps at the new level are skipped, each raising the window by the
// threshold it exceeded, until the level is accepted. Hand-computed
// thresholds (mean + 3 std of the last 8): 1.2, 1.2734, 1.3773, then 1.5137.
TEST(RoundPolicyTest, ALastingRiseIsAcceptedAfterAFewSkips) {
  RoundPolicy policy(WithSpikeRule(Static(10), /*sigma=*/3, /*window=*/8,
                                   /*warmup_steps=*/4));
  for (int i = 0; i < 8; ++i) {
    const double total = i % 2 == 0 ? 1.0 : 1.1;
    ASSERT_EQ(policy.Decide(total).action, v1::ACTION_NONE);
    policy.Observe(total, v1::ACTION_NONE);
  }
  std::vector<v1::Action> actions;
  for (int i = 0; i < 6; ++i) {
    RoundDecision d = policy.Decide(1.5);
    actions.push_back(d.action);
    policy.Observe(1.5, d.action);
  }
  EXPECT_THAT(actions, ::testing::ElementsAre(
                           v1::ACTION_SKIP, v1::ACTION_SKIP, v1::ACTION_SKIP,
                           v1::ACTION_NONE, v1::ACTION_NONE, v1::ACTION_NONE));
}

// Equal totals have no spread: any larger total would be infinitely many
// standard deviations above them, so nothing is skipped until there is spread.
TEST(RoundPolicyTest, AWindowWithoutSpreadSkipsNothing) {
  RoundPolicy policy(WithSpikeRule(Static(10), /*sigma=*/6, /*window=*/8,
                                   /*warmup_steps=*/4));
  for (int i = 0; i < 8; ++i) policy.Observe(1.0, v1::ACTION_NONE);
  EXPECT_EQ(policy.Decide(1.0000001).action, v1::ACTION_NONE);
  EXPECT_EQ(policy.Decide(5.0).action, v1::ACTION_NONE);
  policy.Observe(1.0000001, v1::ACTION_NONE);
  EXPECT_EQ(policy.Decide(5.0).action, v1::ACTION_SKIP);
}

// A skipped spike was never applied: it stays out of the clip policy's
// history (AutoClip at the 100th percentile of the last 4 totals here).
TEST(RoundPolicyTest, ASkippedSpikeStaysOutOfTheClipPolicy) {
  v1::RunConfig config = Static(100);
  v1::AutoClip* autoclip = config.mutable_clip_policy()->mutable_auto_clip();
  autoclip->set_percentile(100);
  autoclip->set_history_length(4);
  autoclip->set_warmup_steps(1);
  RoundPolicy policy(WithSpikeRule(config, /*sigma=*/2, /*window=*/8,
                                   /*warmup_steps=*/3));
  for (double total : {1.0, 2.0, 3.0}) {
    RoundDecision d = policy.Decide(total);
    policy.Observe(total, d.action);
  }
  EXPECT_EQ(policy.Decide(2.5).effective_max_norm, 3);
  RoundDecision spike = policy.Decide(1000);
  ASSERT_EQ(spike.action, v1::ACTION_SKIP);
  policy.Observe(1000, spike.action);
  EXPECT_EQ(policy.Decide(2.5).effective_max_norm, 3);  // Not 1000.
}

TEST(RoundPolicyTest, ZClipDecidesWithItsThreshold) {
  v1::RunConfig config = Static(100);
  v1::ZClip* z = config.mutable_clip_policy()->mutable_zclip();
  z->set_alpha(0.5);
  z->set_z_threshold(2);
  z->set_warmup_steps(2);
  RoundPolicy policy(config);
  policy.Observe(2, v1::ACTION_NONE);
  policy.Observe(4, v1::ACTION_NONE);
  RoundDecision d = policy.Decide(10);
  EXPECT_EQ(d.action, v1::ACTION_CLIP);
  EXPECT_EQ(d.effective_max_norm, 5);
  EXPECT_EQ(d.clip_coef, 5 / (10 + 1e-6));
  EXPECT_EQ(d.detail, "norm 10 > max_norm 5 (zclip)");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
