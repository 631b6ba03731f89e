#include "server/core/clip_policy.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(StaticClipPolicyTest, AlwaysMaxNorm) {
  v1::RunConfig config;
  config.set_max_norm(1.5);
  config.mutable_clip_policy()->mutable_static_clip();
  std::unique_ptr<ClipPolicy> policy = MakeClipPolicy(config);
  EXPECT_EQ(policy->name(), "static");
  EXPECT_EQ(policy->EffectiveMaxNorm(), 1.5);
  for (double total : {100.0, 0.1, 7.0}) policy->Observe(total);
  EXPECT_EQ(policy->EffectiveMaxNorm(), 1.5);
}

TEST(StaticClipPolicyTest, UnsetPolicyIsStatic) {
  v1::RunConfig config;
  config.set_max_norm(2);
  EXPECT_EQ(MakeClipPolicy(config)->name(), "static");
  EXPECT_EQ(MakeClipPolicy(config)->EffectiveMaxNorm(), 2);
}

v1::RunConfig AutoClipConfig(double percentile, uint32_t history,
                             uint32_t warmup) {
  v1::RunConfig config;
  config.set_max_norm(100);
  v1::AutoClip* a = config.mutable_clip_policy()->mutable_auto_clip();
  a->set_percentile(percentile);
  a->set_history_length(history);
  a->set_warmup_steps(warmup);
  return config;
}

TEST(AutoClipPolicyTest, HandComputedSequence) {
  // Median (nearest rank) of the last 4 finite totals after 3 of warm-up.
  std::unique_ptr<ClipPolicy> policy = MakeClipPolicy(AutoClipConfig(50, 4, 3));
  EXPECT_EQ(policy->name(), "autoclip");
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);
  policy->Observe(1);
  policy->Observe(5);
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);  // 2 < warm-up of 3.
  policy->Observe(kNaN);                       // Ignored: not finite.
  policy->Observe(kInf);
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);
  policy->Observe(3);
  // {1, 3, 5}: rank ceil(1.5) = 2 -> 3.
  EXPECT_EQ(policy->EffectiveMaxNorm(), 3);
  policy->Observe(9);
  // {1, 3, 5, 9}: rank 2 -> 3.
  EXPECT_EQ(policy->EffectiveMaxNorm(), 3);
  policy->Observe(7);
  // The 1 left the history: {3, 5, 7, 9}: rank 2 -> 5.
  EXPECT_EQ(policy->EffectiveMaxNorm(), 5);
}

TEST(AutoClipPolicyTest, PercentileEdges) {
  std::unique_ptr<ClipPolicy> p10 = MakeClipPolicy(AutoClipConfig(10, 10, 1));
  std::unique_ptr<ClipPolicy> p100 = MakeClipPolicy(AutoClipConfig(100, 10, 1));
  for (double x : {8.0, 3.0, 6.0, 1.0, 9.0, 2.0, 7.0, 4.0, 10.0, 5.0}) {
    p10->Observe(x);
    p100->Observe(x);
  }
  EXPECT_EQ(p10->EffectiveMaxNorm(), 1);  // 10% of 10 is rank 1, exactly.
  EXPECT_EQ(p100->EffectiveMaxNorm(), 10);
}

v1::RunConfig ZClipConfig(double alpha, double z, uint32_t warmup) {
  v1::RunConfig config;
  config.set_max_norm(100);
  v1::ZClip* zc = config.mutable_clip_policy()->mutable_zclip();
  zc->set_alpha(alpha);
  zc->set_z_threshold(z);
  zc->set_warmup_steps(warmup);
  return config;
}

TEST(ZClipPolicyTest, HandComputedSequence) {
  std::unique_ptr<ClipPolicy> policy = MakeClipPolicy(ZClipConfig(0.5, 2, 2));
  EXPECT_EQ(policy->name(), "zclip");
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);
  policy->Observe(2);
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);
  policy->Observe(kNaN);  // Ignored.
  policy->Observe(4);
  // Warm-up {2, 4}: mean 3, var 1 -> threshold 3 + 2 * 1.
  EXPECT_EQ(policy->EffectiveMaxNorm(), 5);
  policy->Observe(4);
  // mean = .5*3 + .5*4 = 3.5; var = .5*1 + .5*(4-3.5)^2 = 0.625.
  EXPECT_DOUBLE_EQ(policy->EffectiveMaxNorm(), 3.5 + 2 * std::sqrt(0.625));
  policy->Observe(20);
  // 20 is clipped to the threshold t = 3.5 + 2 sqrt(.625) before entering the
  // EMA: mean = (3.5 + t) / 2; var = .5*.625 + .5*(t - mean)^2 = 0.625.
  const double t = 3.5 + 2 * std::sqrt(0.625);
  const double mean = 0.5 * 3.5 + 0.5 * t;
  EXPECT_DOUBLE_EQ(policy->EffectiveMaxNorm(), mean + 2 * std::sqrt(0.625));
  EXPECT_NEAR(policy->EffectiveMaxNorm(), 5.871708245126285, 1e-12);
}

TEST(ZClipPolicyTest, DefaultWarmupIs25) {
  v1::RunConfig config = ZClipConfig(0.97, 2.5, 25);
  std::unique_ptr<ClipPolicy> policy = MakeClipPolicy(config);
  for (int i = 0; i < 24; ++i) policy->Observe(1.0 + (i % 2));
  EXPECT_EQ(policy->EffectiveMaxNorm(), 100);
  policy->Observe(1.0);
  // 13 ones and 12 twos: mean 1.48, var 0.2496.
  EXPECT_NEAR(policy->EffectiveMaxNorm(), 1.48 + 2.5 * std::sqrt(0.2496),
              1e-12);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
