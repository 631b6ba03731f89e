#include "server/core/spike_rule.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

v1::SpikeRule Rule(bool enabled, double sigma, uint32_t window,
                   uint32_t warmup) {
  v1::SpikeRule rule;
  rule.set_enabled(enabled);
  rule.set_sigma(sigma);
  rule.set_window(window);
  rule.set_warmup_steps(warmup);
  return rule;
}

TEST(SpikeRuleTest, DisabledNeverFires) {
  SpikeRule rule(Rule(false, 2, 4, 1));
  rule.Observe(1);
  rule.Observe(1);
  EXPECT_FALSE(rule.Current().has_value());
}

TEST(SpikeRuleTest, HandComputedWindow) {
  SpikeRule rule(Rule(true, 2, 4, 3));
  rule.Observe(1);
  rule.Observe(2);
  EXPECT_FALSE(rule.Current().has_value());                // Warming up: 2 < 3.
  rule.Observe(std::numeric_limits<double>::quiet_NaN());  // Ignored.
  rule.Observe(3);
  std::optional<SpikeRule::Window> w = rule.Current();
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->size, 3u);
  EXPECT_EQ(w->mean, 2);
  EXPECT_DOUBLE_EQ(w->std, std::sqrt(2.0 / 3));
  EXPECT_DOUBLE_EQ(w->threshold, 2 + 2 * std::sqrt(2.0 / 3));
  rule.Observe(3);
  rule.Observe(5);  // The window holds 4: {2, 3, 3, 5}.
  w = rule.Current();
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->size, 4u);
  EXPECT_EQ(w->mean, 3.25);
  EXPECT_DOUBLE_EQ(w->std, std::sqrt(1.1875));
  EXPECT_EQ(w->sigma, 2);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
