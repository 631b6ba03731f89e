// Real processes (one per rank) reducing over Gloo: 2 DP x 2 TP ranks over
// shards of the known gradient of test_gradient.h.
//
// Usage (Bazel passes it): gloo_ranks_test <path of rank_main>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/child_process.h"
#include "gtest/gtest.h"
#include "tests/client_processes/rank_support.h"
#include "tests/client_processes/test_gradient.h"

namespace gradnorm {
namespace testing {
namespace {

std::string g_rank_main;  // NOLINT: set once in main.

struct RankOutcome {
  int exit_code = -1;
  std::map<std::string, std::string> out;
  double Double(const std::string& key) const {
    auto it = out.find(key);
    return it == out.end() ? std::nan("")
                           : std::strtod(it->second.c_str(), nullptr);
  }
};

// Starts dp * tp ranks of one job with `flags` and waits (bounded) for all
// but `hung_rank`, which is killed once the others are done.
std::vector<RankOutcome> RunJob(int dp, int tp,
                                const std::vector<std::string>& flags,
                                absl::Duration limit = absl::Seconds(40),
                                int hung_rank = -1) {
  std::string dir = ::testing::TempDir() + "/ranks_XXXXXX";
  EXPECT_NE(mkdtemp(&dir[0]), nullptr);
  const int n = dp * tp;
  std::vector<std::unique_ptr<ChildProcess>> procs;
  for (int r = 0; r < n; ++r) {
    std::vector<std::string> argv = {g_rank_main,
                                     absl::StrCat("--store=", dir),
                                     absl::StrCat("--rank=", r),
                                     absl::StrCat("--dp=", dp),
                                     absl::StrCat("--tp=", tp),
                                     absl::StrCat("--out=", dir, "/out.", r)};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<std::unique_ptr<ChildProcess>> p =
        ChildProcess::Start(argv, ChildOptions());
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) procs.push_back(std::move(p).value());
  }
  const absl::Time deadline = absl::Now() + limit;
  std::vector<RankOutcome> outcomes(n);
  for (int r = 0; r < static_cast<int>(procs.size()); ++r) {
    if (r == hung_rank) continue;
    absl::StatusOr<int> code = procs[r]->Wait(deadline);
    EXPECT_TRUE(code.ok()) << "rank " << r << ": " << code.status();
    outcomes[r].exit_code = code.ok() ? *code : -1;
    auto kv = ReadKeyValues(absl::StrCat(dir, "/out.", r));
    if (kv.ok()) outcomes[r].out.insert(kv->begin(), kv->end());
  }
  if (hung_rank >= 0 && hung_rank < static_cast<int>(procs.size())) {
    procs[hung_rank]->Kill();
  }
  return outcomes;
}

std::string Describe(const RankOutcome& o) {
  std::string s = absl::StrCat("exit ", o.exit_code);
  for (const auto& [k, v] : o.out) absl::StrAppend(&s, "\n  ", k, " ", v);
  return s;
}

constexpr double kInf = std::numeric_limits<double>::infinity();
const std::vector<std::pair<std::string, double>>& Norms() {
  static const auto* norms = new std::vector<std::pair<std::string, double>>{
      {"1", 1.0}, {"2", 2.0}, {"3", 3.0}, {"inf", kInf}};
  return *norms;
}

TEST(GlooRanksTest, EveryRankGetsTheNormOfTheFullGradient) {
  std::vector<RankOutcome> ranks = RunJob(2, 2, {"--scenario=norms"});
  for (const auto& [name, p] : Norms()) {
    const double expected = FullNorm(p, /*with_bias=*/true);
    for (int r = 0; r < 4; ++r) {
      ASSERT_EQ(ranks[r].exit_code, 0) << Describe(ranks[r]);
      const std::string key = absl::StrCat("norm_", name);
      EXPECT_NEAR(ranks[r].Double(key), expected, 1e-12 * expected)
          << "p=" << name << " rank " << r;
      // Bitwise the same on every rank.
      EXPECT_EQ(ranks[r].out[key], ranks[0].out[key]);
    }
  }
}

TEST(GlooRanksTest, DesignTensorParallelExampleIsSqrt26) {
  std::vector<RankOutcome> ranks = RunJob(1, 2, {"--scenario=tp_example"});
  for (int r = 0; r < 2; ++r) {
    ASSERT_EQ(ranks[r].exit_code, 0) << Describe(ranks[r]);
    EXPECT_EQ(ranks[r].Double("norm_2"), std::sqrt(26.0)) << Describe(ranks[r]);
  }
}

TEST(GlooRanksTest, RankWithoutGradientsJoinsEveryReduction) {
  std::vector<RankOutcome> ranks =
      RunJob(2, 2, {"--scenario=norms", "--empty_rank=3"});
  for (const auto& [name, p] : Norms()) {
    const double expected = FullNorm(p, true, /*shards=*/4, /*skip_shard=*/3);
    for (int r = 0; r < 4; ++r) {
      ASSERT_EQ(ranks[r].exit_code, 0) << Describe(ranks[r]);
      EXPECT_NEAR(ranks[r].Double(absl::StrCat("norm_", name)), expected,
                  1e-12 * expected)
          << "p=" << name << " rank " << r;
    }
  }
}

TEST(GlooRanksTest, EveryRankClipsByTheSameCoefficient) {
  std::vector<RankOutcome> ranks =
      RunJob(2, 2, {"--scenario=step", "--max_norm=0.5"});
  const double total = FullNorm(2.0, true);
  const double coef = 0.5 / (total + 1e-6);
  ASSERT_LT(coef, 1.0);
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(ranks[r].exit_code, 0) << Describe(ranks[r]);
    EXPECT_EQ(ranks[r].out["action"], "ACTION_CLIP");
    EXPECT_NEAR(ranks[r].Double("total"), total, 1e-12 * total);
    EXPECT_NEAR(ranks[r].Double("coef"), coef, 1e-12);
    std::vector<float> shard = WeightShard(r, 4);
    for (size_t i = 0; i < shard.size(); ++i) {
      EXPECT_EQ(static_cast<float>(ranks[r].Double(absl::StrCat("w", i))),
                shard[i] * static_cast<float>(ranks[r].Double("coef")))
          << "rank " << r << " w" << i;
    }
  }
}

TEST(GlooRanksTest, OneNaNMakesEveryRankSkipWithoutChangingGradients) {
  std::vector<RankOutcome> ranks =
      RunJob(2, 2, {"--scenario=step", "--max_norm=0.01", "--nan_rank=2"});
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(ranks[r].exit_code, 0) << Describe(ranks[r]);
    EXPECT_EQ(ranks[r].out["action"], "ACTION_SKIP") << Describe(ranks[r]);
    EXPECT_EQ(ranks[r].out["nonfinite"], "1");
    EXPECT_TRUE(std::isnan(ranks[r].Double("total")));
    std::vector<float> shard = WeightShard(r, 4);
    for (size_t i = r == 2 ? 1 : 0; i < shard.size(); ++i) {
      EXPECT_EQ(static_cast<float>(ranks[r].Double(absl::StrCat("w", i))),
                shard[i])
          << "rank " << r << " w" << i;
    }
    std::vector<float> bias = BiasShard(r / 2, 2);
    for (size_t i = 0; i < bias.size(); ++i) {
      EXPECT_EQ(static_cast<float>(ranks[r].Double(absl::StrCat("b", i))),
                bias[i]);
    }
  }
}

TEST(GlooRanksTest, KilledRankMakesSurvivorsFailWithinTheTimeout) {
  constexpr double kTimeoutSeconds = 3;
  std::vector<RankOutcome> ranks =
      RunJob(2, 2, {"--scenario=step", "--die_rank=3", "--timeout_ms=3000"});
  EXPECT_EQ(ranks[3].exit_code, 128 + SIGKILL);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(ranks[r].exit_code, 1) << Describe(ranks[r]);
    const std::string code = ranks[r].out["error_code"];
    EXPECT_TRUE(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED")
        << Describe(ranks[r]);
    EXPECT_FALSE(ranks[r].out["error"].empty());
    EXPECT_LE(ranks[r].Double("elapsed_s"), kTimeoutSeconds + 1.5)
        << Describe(ranks[r]);
  }
}

// A rank that hangs (stopped, its sockets open): the survivors cannot see a
// broken connection and must give up at the timeout.
TEST(GlooRanksTest, HungRankMakesSurvivorsFailAtTheTimeout) {
  constexpr double kTimeoutSeconds = 2;
  std::vector<RankOutcome> ranks =
      RunJob(2, 2, {"--scenario=step", "--stop_rank=3", "--timeout_ms=2000"},
             absl::Seconds(30), /*hung_rank=*/3);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(ranks[r].exit_code, 1) << Describe(ranks[r]);
    const std::string code = ranks[r].out["error_code"];
    EXPECT_TRUE(code == "UNAVAILABLE" || code == "DEADLINE_EXCEEDED")
        << Describe(ranks[r]);
    EXPECT_LE(ranks[r].Double("elapsed_s"), 2 * kTimeoutSeconds + 1.5)
        << Describe(ranks[r]);
  }
  // The ranks next to the hung one time out themselves.
  EXPECT_EQ(ranks[1].out["error_code"], "DEADLINE_EXCEEDED")
      << Describe(ranks[1]);
  EXPECT_EQ(ranks[2].out["error_code"], "DEADLINE_EXCEEDED")
      << Describe(ranks[2]);
}

}  // namespace
}  // namespace testing
}  // namespace gradnorm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <path of rank_main>\n", argv[0]);
    return 2;
  }
  gradnorm::testing::g_rank_main = argv[1];
  return RUN_ALL_TESTS();
}
