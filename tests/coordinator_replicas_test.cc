// Coordinator replicas (--replica) on a real PostgreSQL (started by the
// test): three coordinators share one database and every one of them serves
// clients, forwarding their calls to the one holding the database.
//   - Agreement: 64 participants spread over the three, 200 steps, each clip
//     policy and the spike rule: every decision is bitwise the one a single
//     SQLite coordinator gives for the same reports.
//   - Failover: a random replica (holding the database or not) is SIGKILLed
//     every 0.2-0.6 s while eight jobs, each preferring a different replica,
//     train: every job finishes, and every round is stored once and agreed.
//   - Database restart: every replica answers NOT_SERVING while it is gone
//     and serves again after; nothing is lost.
#include "tests/demo/coordinator_replicas.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/http/http_test_client.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/postgres_connection.h"
#include "tests/local_coordinator.h"
#include "tests/postgres_jobs.h"

namespace gradnorm {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
using ::testing::StartsWith;
using Role = demo::CoordinatorReplicas::Role;

// The runs of the agreement test: one per clip policy, and the spike rule.
std::vector<std::pair<std::string, v1::RunConfig>> PolicyRuns(
    uint32_t participants) {
  v1::RunConfig base;
  base.set_participants(participants);
  base.set_max_norm(6.0);
  base.set_inexact(true);  // doubles are reported
  std::vector<std::pair<std::string, v1::RunConfig>> runs;
  runs.emplace_back("static", base);
  v1::RunConfig autoclip = base;
  autoclip.mutable_clip_policy()->mutable_auto_clip()->set_percentile(50);
  autoclip.mutable_clip_policy()->mutable_auto_clip()->set_history_length(40);
  autoclip.mutable_clip_policy()->mutable_auto_clip()->set_warmup_steps(10);
  runs.emplace_back("autoclip", autoclip);
  v1::RunConfig zclip = base;
  zclip.mutable_clip_policy()->mutable_zclip()->set_alpha(0.9);
  zclip.mutable_clip_policy()->mutable_zclip()->set_z_threshold(2.0);
  zclip.mutable_clip_policy()->mutable_zclip()->set_warmup_steps(10);
  runs.emplace_back("zclip", zclip);
  v1::RunConfig spikes = zclip;
  spikes.mutable_spike_rule()->set_enabled(true);
  spikes.mutable_spike_rule()->set_sigma(3.0);
  spikes.mutable_spike_rule()->set_window(32);
  spikes.mutable_spike_rule()->set_warmup_steps(8);
  runs.emplace_back("spikes", spikes);
  return runs;
}

// Participant p's partial at `step` in the agreement test: noisy, with
// spikes at a few steps and a non-finite report at one.
double AgreementPartial(int p, int step) {
  if (step == 120 && p == 5) return std::nan("");
  double value = 0.5 + 0.01 * ((p * 7 + step * 13) % 17) +
                 0.002 * step * (step % 3 == 0 ? 1 : -0.5);
  if (step == 60 || step == 61 || step == 170) value *= 40;
  return std::max(value, 0.01);
}

// One participant's results of every run, step after step: [run][step].
using Results = std::vector<std::vector<v1::RoundResult>>;

// Registers the runs, then 'participants' threads report every step of every
// run, participant p through target_of(p); returns what each got.
std::vector<Results> Train(const std::function<std::string(int)>& target_of,
                           int participants, int steps, std::string* error) {
  const auto runs = PolicyRuns(participants);
  {
    absl::StatusOr<std::unique_ptr<CoordinatorClient>> admin =
        CoordinatorClient::Create(FastRetries(target_of(0)));
    if (!admin.ok()) {
      *error = admin.status().ToString();
      return {};
    }
    for (const auto& [run_id, config] : runs) {
      absl::Status registered =
          (*admin)
              ->RegisterRun(run_id, config, absl::Now() + absl::Seconds(30))
              .status();
      if (!registered.ok()) {
        *error = registered.ToString();
        return {};
      }
    }
  }
  std::vector<Results> got(
      participants, Results(runs.size(), std::vector<v1::RoundResult>()));
  std::vector<std::string> errors(participants);
  std::vector<std::thread> threads;
  for (int p = 0; p < participants; ++p) {
    threads.emplace_back([&, p] {
      absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
          CoordinatorClient::Create(FastRetries(target_of(p)));
      if (!client.ok()) {
        errors[p] = client.status().ToString();
        return;
      }
      for (int step = 0; step < steps; ++step) {
        for (size_t r = 0; r < runs.size(); ++r) {
          v1::ReportRequest request;
          request.set_run_id(runs[r].first);
          request.set_step(step);
          request.set_participant(p);
          request.set_partial(AgreementPartial(p, step));
          absl::StatusOr<v1::RoundResult> result =
              (*client)->Report(request, absl::Now() + absl::Seconds(60));
          if (!result.ok()) {
            errors[p] = absl::StrCat(runs[r].first, " step ", step, ": ",
                                     result.status().ToString());
            return;
          }
          got[p][r].push_back(*std::move(result));
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int p = 0; p < participants; ++p) {
    if (!errors[p].empty()) {
      *error = absl::StrCat("participant ", p, ": ", errors[p]);
      break;
    }
  }
  return got;
}

bool SameBits(double a, double b) { return std::memcmp(&a, &b, 8) == 0; }

// The decision of a round: everything but when it was finalized and who
// came last.
std::string Decision(const v1::RoundResult& r) {
  return absl::StrCat(r.run_id(), " step ", r.step(), " total ", r.total_norm(),
                      " coef ", r.clip_coef(), " action ", r.action(),
                      " reason ", r.reason(), " (", r.reason_detail(), ") max ",
                      r.effective_max_norm(), " exact ", r.exact());
}
bool SameDecision(const v1::RoundResult& a, const v1::RoundResult& b) {
  return a.run_id() == b.run_id() && a.step() == b.step() &&
         SameBits(a.total_norm(), b.total_norm()) &&
         SameBits(a.clip_coef(), b.clip_coef()) && a.action() == b.action() &&
         a.reason() == b.reason() && a.reason_detail() == b.reason_detail() &&
         SameBits(a.effective_max_norm(), b.effective_max_norm()) &&
         a.exact() == b.exact();
}

TEST(CoordinatorReplicasTest, DecisionsAreASingleCoordinatorsBitForBit) {
  constexpr int kParticipants = 64;
  constexpr int kSteps = 200;
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";

  // The reference: one coordinator on SQLite.
  absl::StatusOr<std::string> single_dir = MakeScratchDir("single");
  ASSERT_TRUE(single_dir.ok()) << single_dir.status();
  absl::StatusOr<LocalCoordinator> single =
      StartLocalCoordinator(binary, *single_dir, {});
  ASSERT_TRUE(single.ok()) << single.status();
  std::string error;
  const absl::Time single_start = absl::Now();
  const std::vector<Results> expected =
      Train([&](int) { return single->target; }, kParticipants, kSteps, &error);
  const absl::Duration single_took = absl::Now() - single_start;
  ASSERT_EQ(error, "");

  // Three replicas on PostgreSQL; participant p prefers replica p % 3.
  absl::StatusOr<std::unique_ptr<server::LocalPostgres>> pg =
      server::LocalPostgres::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  absl::StatusOr<std::string> dsn = (*pg)->CreateDatabase("agreement");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  absl::StatusOr<std::string> dir = MakeScratchDir("replicas");
  ASSERT_TRUE(dir.ok()) << dir.status();
  absl::StatusOr<std::unique_ptr<demo::CoordinatorReplicas>> replicas =
      demo::CoordinatorReplicas::Start(binary, *dir, *dsn, 3, {},
                                       Role::kReplicas);
  ASSERT_TRUE(replicas.ok()) << replicas.status();
  const absl::Time replicas_start = absl::Now();
  const std::vector<Results> got =
      Train([&](int p) { return (*replicas)->target(p % 3); }, kParticipants,
            kSteps, &error);
  const absl::Duration replicas_took = absl::Now() - replicas_start;
  ASSERT_EQ(error, "");

  const auto runs = PolicyRuns(kParticipants);
  int clipped = 0;
  int skipped = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    for (int step = 0; step < kSteps; ++step) {
      const v1::RoundResult& want = expected[0][r][step];
      clipped += want.action() == v1::ACTION_CLIP;
      skipped += want.action() == v1::ACTION_SKIP;
      for (int p = 0; p < kParticipants; ++p) {
        ASSERT_TRUE(SameDecision(expected[p][r][step], want))
            << "single coordinator, participant " << p;
        ASSERT_TRUE(SameDecision(got[p][r][step], want))
            << "participant " << p << " got " << Decision(got[p][r][step])
            << "\nexpected " << Decision(want);
      }
    }
  }
  // The reports exercised the policies: some rounds clipped, some skipped.
  EXPECT_GT(clipped, 0);
  EXPECT_GT(skipped, 0);
  std::printf(
      "%d participants x %d steps x %zu runs: every decision equal; %d "
      "clipped, %d skipped; %.1f s on one SQLite coordinator, %.1f s through "
      "three replicas\n",
      kParticipants, kSteps, runs.size(), clipped, skipped,
      absl::ToDoubleSeconds(single_took), absl::ToDoubleSeconds(replicas_took));

  // And the database holds each round once.
  absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
      server::PgConnection::Connect(*dsn);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<server::PgResult> rows = (*db)->Exec(
      "SELECT count(*), count(DISTINCT (run_id, step)) FROM rounds");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->Int64(0, 0), static_cast<int64_t>(runs.size()) * kSteps);
  EXPECT_EQ(rows->Int64(0, 1), static_cast<int64_t>(runs.size()) * kSteps);

  // Each replica's HTTP port relays to the holder's: the same JSON API.
  for (int i = 0; i < 3; ++i) {
    const std::string answer =
        server::testing::HttpGet((*replicas)->http_port(i), "/api/v1/runs");
    EXPECT_THAT(answer, StartsWith("HTTP/1.1 200 OK\r\n")) << "replica " << i;
    EXPECT_THAT(answer, HasSubstr("\"run_id\":\"spikes\"")) << i;
  }
  EXPECT_TRUE((*replicas)->StopAll().ok());
}

// Three replicas; eight jobs, job j preferring replica j % 3 and failing over
// to the next. A random replica is SIGKILLed and started again every
// 0.2-0.6 s, at least 20 times and at least 8 times the one holding the
// database.
TEST(CoordinatorReplicasTest, JobsFinishWhileRandomReplicasAreKilled) {
  constexpr int kJobs = 8;
  constexpr int kKills = 20;
  constexpr int kHolderKills = 8;
  absl::StatusOr<SharedDatabase> shared = SharedDatabase::Start(
      "replica_chaos", 3, "chaos-run", kJobs, Role::kReplicas);
  ASSERT_TRUE(shared.ok()) << shared.status();
  demo::CoordinatorReplicas* replicas = shared->replicas.get();

  const KillsOutcome outcome = TrainWhileKilling(
      *replicas,
      [&](int job) { return FastRetries(replicas->target(job % 3)); },
      "chaos-run", kJobs, kKills, kHolderKills, 2027);
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  EXPECT_GE(outcome.serving_kills, kHolderKills)
      << "in " << outcome.kills << " kills";
  std::printf(
      "%d kills (%d of the replica holding the database) during %lld steps; "
      "longest wait for an answer: %.3f s\n",
      outcome.kills, outcome.serving_kills,
      static_cast<long long>(outcome.steps),
      absl::ToDoubleSeconds(outcome.longest));
  ExpectEveryRoundOnceAndAgreed(shared->dsn, "chaos-run", outcome.logs,
                                outcome.steps);
  EXPECT_TRUE(replicas->StopAll().ok());
}

// The database stops for 1.5 s mid-run under three replicas: every replica
// answers NOT_SERVING on its health port while it is gone (and stays up),
// every one serves again after, and every job finishes every step.
TEST(CoordinatorReplicasTest, JobsFinishAcrossADatabaseRestart) {
  constexpr int kJobs = 4;
  constexpr int kRunSteps = 300;
  absl::StatusOr<SharedDatabase> shared = SharedDatabase::Start(
      "replica_dbrestart", 3, "db-restart", kJobs, Role::kReplicas);
  ASSERT_TRUE(shared.ok()) << shared.status();
  demo::CoordinatorReplicas* replicas = shared->replicas.get();

  const RestartOutcome outcome = TrainAcrossDatabaseRestart(
      *shared, [&](int job) { return FastRetries(replicas->target(job % 3)); },
      "db-restart", kJobs, kRunSteps, 3);
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  EXPECT_EQ(outcome.not_serving_while_down, 3);
  EXPECT_EQ(outcome.alive_while_down, 3);
  int serving_again = 0;
  for (const absl::Time until = absl::Now() + absl::Seconds(10);
       absl::Now() < until && serving_again < 3;
       absl::SleepFor(absl::Milliseconds(50))) {
    serving_again = HealthCount(*replicas, "", "SERVING");
  }
  EXPECT_EQ(serving_again, 3);
  ExpectEveryRoundOnceAndAgreed(shared->dsn, "db-restart", outcome.logs,
                                kRunSteps);
  EXPECT_TRUE(replicas->StopAll().ok());
}

}  // namespace
}  // namespace gradnorm
