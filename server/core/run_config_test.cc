#include "server/core/run_config.h"

#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

v1::RunConfig Minimal() {
  v1::RunConfig config;
  config.set_max_norm(1.0);
  config.set_participants(4);
  return config;
}

TEST(ValidateRunIdTest, AcceptsThePattern) {
  EXPECT_TRUE(ValidateRunId("a").ok());
  EXPECT_TRUE(ValidateRunId("llama-70B_run.3").ok());
  EXPECT_TRUE(ValidateRunId(std::string(128, 'x')).ok());
}

TEST(ValidateRunIdTest, RejectsWithReason) {
  absl::Status empty = ValidateRunId("");
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.message(), HasSubstr("run_id is empty"));

  absl::Status long_id = ValidateRunId(std::string(129, 'x'));
  EXPECT_EQ(long_id.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(long_id.message(), HasSubstr("129 characters long"));

  absl::Status slash = ValidateRunId("a/b");
  EXPECT_EQ(slash.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(slash.message(),
            "run_id has '/' at position 1; expected only characters of "
            "[A-Za-z0-9._-]");

  absl::Status nul = ValidateRunId(std::string("ab\0", 3));
  EXPECT_THAT(nul.message(), HasSubstr("byte 0x00 at position 2"));
}

TEST(NormalizeRunConfigTest, FillsDocumentedDefaults) {
  absl::StatusOr<v1::RunConfig> config = NormalizeRunConfig(Minimal(), 100);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->norm_type(), 2.0);
  EXPECT_EQ(config->max_norm(), 1.0);
  EXPECT_EQ(config->participants(), 4u);
  EXPECT_TRUE(config->clip_policy().has_static_clip());
  EXPECT_FALSE(config->spike_rule().enabled());
  EXPECT_EQ(config->spike_rule().sigma(), 6.0);
  EXPECT_EQ(config->spike_rule().window(), 128u);
  EXPECT_EQ(config->spike_rule().warmup_steps(), 16u);
  EXPECT_EQ(config->nonfinite_policy(), v1::NON_FINITE_POLICY_SKIP);
  EXPECT_EQ(config->round_timeout_ms(), 60000u);
}

TEST(NormalizeRunConfigTest, FillsPolicyDefaults) {
  v1::RunConfig auto_clip = Minimal();
  auto_clip.mutable_clip_policy()->mutable_auto_clip();
  absl::StatusOr<v1::RunConfig> a = NormalizeRunConfig(auto_clip, 100);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->clip_policy().auto_clip().percentile(), 10.0);
  EXPECT_EQ(a->clip_policy().auto_clip().history_length(), 1000u);
  EXPECT_EQ(a->clip_policy().auto_clip().warmup_steps(), 10u);

  v1::RunConfig zclip = Minimal();
  zclip.mutable_clip_policy()->mutable_zclip();
  absl::StatusOr<v1::RunConfig> z = NormalizeRunConfig(zclip, 100);
  ASSERT_TRUE(z.ok()) << z.status();
  EXPECT_EQ(z->clip_policy().zclip().alpha(), 0.97);
  EXPECT_EQ(z->clip_policy().zclip().z_threshold(), 2.5);
  EXPECT_EQ(z->clip_policy().zclip().warmup_steps(), 25u);
}

TEST(NormalizeRunConfigTest, KeepsExplicitValuesAndInfNorm) {
  v1::RunConfig config = Minimal();
  config.set_norm_type(kInf);
  config.set_round_timeout_ms(5);
  config.set_nonfinite_policy(v1::NON_FINITE_POLICY_ERROR);
  config.mutable_spike_rule()->set_enabled(true);
  config.mutable_spike_rule()->set_window(4);
  config.mutable_spike_rule()->set_warmup_steps(4);
  absl::StatusOr<v1::RunConfig> out = NormalizeRunConfig(config, 100);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->norm_type(), kInf);
  EXPECT_EQ(out->round_timeout_ms(), 5u);
  EXPECT_EQ(out->nonfinite_policy(), v1::NON_FINITE_POLICY_ERROR);
  EXPECT_EQ(out->spike_rule().window(), 4u);
}

void ExpectInvalid(const v1::RunConfig& config, const std::string& message) {
  absl::StatusOr<v1::RunConfig> out = NormalizeRunConfig(config, 100);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), message);
}

TEST(NormalizeRunConfigTest, RejectsOutOfRangeFields) {
  v1::RunConfig c = Minimal();
  c.set_norm_type(-1);
  ExpectInvalid(c,
                "run config field norm_type is -1; expected p > 0, or "
                "+Infinity for the inf-norm (0 means the default 2)");
  c.set_norm_type(kNaN);
  ExpectInvalid(c,
                "run config field norm_type is nan; expected p > 0, or "
                "+Infinity for the inf-norm (0 means the default 2)");
  c.set_norm_type(-kInf);
  ExpectInvalid(c,
                "run config field norm_type is -inf; expected p > 0, or "
                "+Infinity for the inf-norm (0 means the default 2)");

  c = Minimal();
  c.set_max_norm(-0.5);
  ExpectInvalid(c,
                "run config field max_norm is -0.5; expected a finite "
                "value >= 0");
  c.set_max_norm(kNaN);
  ExpectInvalid(c,
                "run config field max_norm is nan; expected a finite "
                "value >= 0");
  c.set_max_norm(kInf);
  ExpectInvalid(c,
                "run config field max_norm is inf; expected a finite "
                "value >= 0");

  c = Minimal();
  c.set_participants(0);
  ExpectInvalid(c,
                "run config field participants is 0; expected between 1 "
                "and 100");
  // More than the server allows is its limit, not a bad value.
  c.set_participants(101);
  absl::StatusOr<v1::RunConfig> over = NormalizeRunConfig(c, 100);
  EXPECT_EQ(over.status(),
            absl::ResourceExhaustedError(
                "run config field participants is 101; this coordinator "
                "allows at most 100 (--max_participants)"));

  c = Minimal();
  c.mutable_clip_policy()->mutable_auto_clip()->set_percentile(100.5);
  ExpectInvalid(c,
                "run config field clip_policy.auto_clip.percentile is "
                "100.5; expected a percentile in (0, 100] (0 means the "
                "default 10)");
  c.mutable_clip_policy()->mutable_auto_clip()->set_percentile(50);
  c.mutable_clip_policy()->mutable_auto_clip()->set_history_length(1000001);
  ExpectInvalid(c,
                "run config field clip_policy.auto_clip.history_length is "
                "1000001; expected at most 1000000");

  c = Minimal();
  c.mutable_clip_policy()->mutable_zclip()->set_alpha(1.0);
  ExpectInvalid(c,
                "run config field clip_policy.zclip.alpha is 1; expected "
                "a smoothing factor in (0, 1) (0 means the default 0.97)");
  c.mutable_clip_policy()->mutable_zclip()->set_alpha(0.5);
  c.mutable_clip_policy()->mutable_zclip()->set_z_threshold(-2);
  ExpectInvalid(c,
                "run config field clip_policy.zclip.z_threshold is -2; "
                "expected a finite value > 0 (0 means the default 2.5)");

  c = Minimal();
  c.mutable_spike_rule()->set_sigma(kInf);
  ExpectInvalid(c,
                "run config field spike_rule.sigma is inf; expected a "
                "finite value > 0 (0 means the default 6)");
  c = Minimal();
  c.mutable_spike_rule()->set_window(8);
  c.mutable_spike_rule()->set_warmup_steps(9);
  ExpectInvalid(c,
                "run config field spike_rule.warmup_steps is 9; expected "
                "at most spike_rule.window (8) since the window never "
                "holds more totals");
  c = Minimal();
  c.mutable_spike_rule()->set_window(4);  // Default warm-up 16 > 4.
  ExpectInvalid(c,
                "run config field spike_rule.warmup_steps is 16; expected "
                "at most spike_rule.window (4) since the window never "
                "holds more totals");

  c = Minimal();
  c.set_nonfinite_policy(static_cast<v1::NonFinitePolicy>(7));
  ExpectInvalid(c,
                "run config field nonfinite_policy is 7; expected "
                "NON_FINITE_POLICY_SKIP (1) or NON_FINITE_POLICY_ERROR (2)");

  c = Minimal();
  c.set_round_timeout_ms(kMaxRoundTimeoutMs + 1);
  ExpectInvalid(c,
                "run config field round_timeout_ms is 86400001; expected "
                "at most 86400000 (one day)");

  // Unset (0) max_norm with an adaptive policy would zero the gradients of its
  // warm-up steps; with the static policy 0 stays allowed (torch's meaning).
  for (bool zclip : {false, true}) {
    c = Minimal();
    c.set_max_norm(0);
    if (zclip) {
      c.mutable_clip_policy()->mutable_zclip();
    } else {
      c.mutable_clip_policy()->mutable_auto_clip();
    }
    ExpectInvalid(c,
                  "run config field max_norm is 0; expected > 0 with an "
                  "adaptive clip policy (AutoClip, ZClip): it is the "
                  "threshold of the policy's warm-up steps");
  }
  c = Minimal();
  c.set_max_norm(0);
  EXPECT_TRUE(NormalizeRunConfig(c, 4096).ok());
}

TEST(DiffRunConfigsTest, EqualAfterDefaults) {
  v1::RunConfig explicit_defaults = Minimal();
  explicit_defaults.set_norm_type(2);
  explicit_defaults.set_round_timeout_ms(60000);
  explicit_defaults.mutable_clip_policy()->mutable_static_clip();
  auto a = NormalizeRunConfig(Minimal(), 100);
  auto b = NormalizeRunConfig(explicit_defaults, 100);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(DiffRunConfigs(*a, *b), IsEmpty());
}

TEST(DiffRunConfigsTest, NamesEachDifferingField) {
  v1::RunConfig other = Minimal();
  other.set_max_norm(2);
  other.set_participants(8);
  other.mutable_clip_policy()->mutable_zclip();
  other.mutable_spike_rule()->set_enabled(true);
  other.set_nonfinite_policy(v1::NON_FINITE_POLICY_ERROR);
  auto a = NormalizeRunConfig(Minimal(), 100);
  auto b = NormalizeRunConfig(other, 100);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_THAT(DiffRunConfigs(*a, *b),
              ElementsAre("max_norm: 1 -> 2", "participants: 4 -> 8",
                          "clip_policy.policy: static_clip -> zclip",
                          "spike_rule.enabled: false -> true",
                          "nonfinite_policy: NON_FINITE_POLICY_SKIP -> "
                          "NON_FINITE_POLICY_ERROR"));
}

TEST(DiffRunConfigsTest, NamesNestedPolicyFields) {
  v1::RunConfig a = Minimal();
  a.mutable_clip_policy()->mutable_auto_clip()->set_percentile(10);
  v1::RunConfig b = a;
  b.mutable_clip_policy()->mutable_auto_clip()->set_percentile(25);
  auto na = NormalizeRunConfig(a, 100);
  auto nb = NormalizeRunConfig(b, 100);
  ASSERT_TRUE(na.ok() && nb.ok());
  EXPECT_THAT(DiffRunConfigs(*na, *nb),
              ElementsAre("clip_policy.auto_clip.percentile: 10 -> 25"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
