#include "tests/postgres_jobs.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/postgres_connection.h"
#include "tests/local_coordinator.h"

namespace gradnorm {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;

double Partial(int participant, int step) {
  return 1.0 + participant + 0.5 * step;
}

std::vector<JobLog> TrainJobs(
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, absl::Duration pace,
    const std::function<bool(int64_t)>& keep_going,
    const std::function<void()>& meanwhile, std::atomic<int64_t>* reached) {
  std::vector<JobLog> logs(jobs);
  std::vector<std::thread> threads;
  for (int p = 0; p < jobs; ++p) {
    threads.emplace_back([&, p] {
      JobLog& log = logs[p];
      absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
          CoordinatorClient::Create(options(p));
      if (!client.ok()) {
        log.error = client.status().ToString();
        return;
      }
      for (int64_t step = 0;; ++step) {
        int64_t seen = reached->load();
        while (seen < step && !reached->compare_exchange_weak(seen, step)) {
        }
        if (!keep_going(step)) break;
        absl::SleepFor(pace);
        v1::ReportRequest request;
        request.set_run_id(run_id);
        request.set_step(step);
        request.set_participant(p);
        request.set_partial(Partial(p, step));
        const absl::Time sent = absl::Now();
        absl::StatusOr<v1::RoundResult> result =
            (*client)->Report(request, sent + absl::Seconds(60));
        log.longest = std::max(log.longest, absl::Now() - sent);
        if (!result.ok()) {
          log.error =
              absl::StrCat("step ", step, ": ", result.status().ToString());
          return;
        }
        log.results.push_back(result->SerializeAsString());
      }
    });
  }
  meanwhile();
  for (std::thread& t : threads) t.join();
  return logs;
}

absl::Status RegisterInexactRun(const CoordinatorClientOptions& options,
                                const std::string& run_id, int jobs) {
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> admin =
      CoordinatorClient::Create(options);
  if (!admin.ok()) return admin.status();
  v1::RunConfig config;
  config.set_participants(jobs);
  config.set_max_norm(6.0);
  config.set_inexact(true);  // doubles are reported
  return (*admin)
      ->RegisterRun(run_id, config, absl::Now() + absl::Seconds(30))
      .status();
}

void ExpectEveryRoundOnceAndAgreed(const std::string& dsn,
                                   const std::string& run_id,
                                   const std::vector<JobLog>& logs,
                                   int64_t steps) {
  for (size_t p = 0; p < logs.size(); ++p) {
    EXPECT_EQ(logs[p].error, "") << "job " << p;
    ASSERT_EQ(logs[p].results.size(), static_cast<size_t>(steps)) << p;
    EXPECT_EQ(logs[p].results, logs[0].results) << "job " << p;
  }
  absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
      server::PgConnection::Connect(dsn);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<server::PgResult> rows = (*db)->Exec(
      "SELECT step, total_norm, action, sequence FROM rounds "
      "WHERE run_id = $1 ORDER BY step",
      {server::PgParam::Text(run_id)});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows(), steps);
  for (int64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE(testing::Message() << "step " << step);
    v1::RoundResult result;
    ASSERT_TRUE(result.ParseFromString(logs[0].results[step]));
    double sum = 0;
    for (size_t p = 0; p < logs.size(); ++p) sum += Partial(p, step);
    EXPECT_EQ(result.step(), static_cast<uint64_t>(step));
    EXPECT_EQ(result.total_norm(), std::sqrt(sum));
    EXPECT_EQ(rows->Int64(step, 0), step);
    EXPECT_EQ(rows->Float64(step, 1), result.total_norm());
    EXPECT_EQ(rows->Int32(step, 2), static_cast<int32_t>(result.action()));
    // Finalized once each, in step order (the jobs wait for each round).
    EXPECT_EQ(rows->Int64(step, 3), step + 1);
  }
}

int HealthCount(demo::CoordinatorReplicas& replicas, const std::string& service,
                const std::string& status) {
  int count = 0;
  for (int i = 0; i < replicas.count(); ++i) {
    TestClient probe(
        NewChannel(absl::StrCat("127.0.0.1:", replicas.health_port(i))));
    count += probe.Health(service) == status;
  }
  return count;
}
int NotServing(demo::CoordinatorReplicas& replicas) {
  return HealthCount(replicas, "", "NOT_SERVING");
}
int Alive(demo::CoordinatorReplicas& replicas) {
  return HealthCount(replicas, "gradnorm.v1.Process", "SERVING");
}

CoordinatorClientOptions FastRetries(const std::string& target) {
  CoordinatorClientOptions options;
  options.target = target;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(300);
  return options;
}

absl::StatusOr<SharedDatabase> SharedDatabase::Start(
    const std::string& name, int count, const std::string& run_id, int jobs,
    demo::CoordinatorReplicas::Role role) {
  SharedDatabase shared;
  ASSIGN_OR_RETURN(shared.postgres, server::LocalPostgres::Start());
  ASSIGN_OR_RETURN(shared.dsn, shared.postgres->CreateDatabase("gradnorm"));
  ASSIGN_OR_RETURN(const std::string dir, MakeScratchDir(name));
  ASSIGN_OR_RETURN(shared.replicas,
                   demo::CoordinatorReplicas::Start(
                       BazelBinOfThisBinary() + "/server/coordinator", dir,
                       shared.dsn, count, {}, role));
  RETURN_IF_ERROR(
      RegisterInexactRun(FastRetries(shared.replicas->target()), run_id, jobs));
  return shared;
}

KillsOutcome TrainWhileKilling(
    demo::CoordinatorReplicas& replicas,
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, int kills, int serving_kills,
    uint32_t seed) {
  KillsOutcome outcome;
  // The jobs stop after `last_step`, set once the kills are done (every job
  // is within a step of the others then: a round needs all of them).
  std::atomic<int64_t> last_step{-1};
  std::atomic<int64_t> reached{0};
  outcome.logs = TrainJobs(
      options, run_id, jobs, absl::ZeroDuration(),
      [&](int64_t step) {
        const int64_t last = last_step.load();
        return last < 0 || step <= last;
      },
      [&] {
        std::mt19937 random(seed);
        while (
            (outcome.kills < kills || outcome.serving_kills < serving_kills) &&
            outcome.kills < 200 && outcome.status.ok()) {
          absl::SleepFor(absl::Milliseconds(
              std::uniform_int_distribution<int>(200, 600)(random)));
          absl::StatusOr<bool> serving =
              replicas.KillAndRestart(std::uniform_int_distribution<int>(
                  0, replicas.count() - 1)(random));
          outcome.status = serving.status();
          ++outcome.kills;
          outcome.serving_kills += serving.value_or(false);
        }
        last_step = reached.load() + 3;
      },
      &reached);
  outcome.steps = last_step.load() + 1;
  for (const JobLog& log : outcome.logs) {
    outcome.longest = std::max(outcome.longest, log.longest);
  }
  return outcome;
}

RestartOutcome TrainAcrossDatabaseRestart(
    SharedDatabase& shared,
    const std::function<CoordinatorClientOptions(int job)>& options,
    const std::string& run_id, int jobs, int steps, int expect_not_serving) {
  RestartOutcome outcome;
  std::atomic<int64_t> reached{0};
  demo::CoordinatorReplicas& replicas = *shared.replicas;
  outcome.logs = TrainJobs(
      options, run_id, jobs,
      absl::Milliseconds(5),  // so that the restart falls mid-run
      [&](int64_t step) { return step < steps; },
      [&] {
        for (const absl::Time until = absl::Now() + absl::Seconds(30);
             reached.load() < steps / 4 && absl::Now() < until;) {
          absl::SleepFor(absl::Milliseconds(5));
        }
        outcome.status = shared.postgres->Stop();
        outcome.stopped_at = reached.load();
        for (const absl::Time until = absl::Now() + absl::Seconds(1);
             absl::Now() < until &&
             NotServing(replicas) < expect_not_serving;) {
          absl::SleepFor(absl::Milliseconds(20));
        }
        outcome.not_serving_while_down = NotServing(replicas);
        outcome.alive_while_down = Alive(replicas);
        absl::SleepFor(absl::Milliseconds(1500));
        outcome.status.Update(shared.postgres->Restart());
      },
      &reached);
  return outcome;
}

}  // namespace gradnorm
