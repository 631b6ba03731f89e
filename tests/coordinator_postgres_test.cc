// The coordinator binary on a real PostgreSQL (started by the test): rounds
// reported by two participants are in the database, as plain SQL rows; a
// coordinator killed with SIGKILL and started again answers every retry with
// the identical result; a second coordinator on the same database is refused
// at start, or waits as a standby and takes over when the first dies, with
// clients that list both addresses failing over to it; and three
// coordinators, one serving and two standing by, of which a random one is
// killed every fraction of a second while eight jobs train.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "common/child_process.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/local_postgres.h"
#include "server/store/postgres_connection.h"
#include "tests/demo/coordinator_replicas.h"
#include "tests/local_coordinator.h"
#include "tests/postgres_jobs.h"

namespace gradnorm {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;

constexpr int kSteps = 20;

// Whether something accepts TCP connections on 127.0.0.1:`port` within 20 s.
bool WaitUntilListening(int port) {
  for (const absl::Time until = absl::Now() + absl::Seconds(20);
       absl::Now() < until; absl::SleepFor(absl::Milliseconds(20))) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(port);
    const bool connected = connect(fd, reinterpret_cast<sockaddr*>(&address),
                                   sizeof(address)) == 0;
    close(fd);
    if (connected) return true;
  }
  return false;
}

TEST(CoordinatorPostgresTest, RoundsLiveInPostgresAndSurviveAKill) {
  absl::StatusOr<std::unique_ptr<server::LocalPostgres>> pg =
      server::LocalPostgres::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  absl::StatusOr<std::string> dsn = (*pg)->CreateDatabase("gradnorm");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  absl::StatusOr<std::string> dir = MakeScratchDir("coordinator-postgres");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string dsn_file = *dir + "/dsn";
  std::ofstream(dsn_file) << *dsn << "\n";
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";
  const std::vector<std::string> flags = {
      "--store=postgres", absl::StrCat("--postgres_dsn_file=", dsn_file)};

  absl::StatusOr<LocalCoordinator> coordinator =
      StartLocalCoordinator(binary, *dir, flags);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  {
    TestClient client(NewChannel(coordinator->target));
    v1::RunConfig config;
    config.set_participants(2);
    config.set_max_norm(3.0);
    config.set_inexact(true);  // doubles are reported
    ASSERT_TRUE(client.RegisterRun("pg-run", config).ok());
  }
  // Two participants report every step.
  std::vector<std::vector<std::string>> results(
      2, std::vector<std::string>(kSteps));
  auto report_all = [&](const std::string& target) {
    std::vector<std::thread> threads;
    for (int p = 0; p < 2; ++p) {
      threads.emplace_back([&, p] {
        TestClient client(NewChannel(target));
        for (int step = 0; step < kSteps; ++step) {
          v1::RoundResult result;
          grpc::Status status =
              client.Report("pg-run", step, p, Partial(p, step), &result);
          ASSERT_TRUE(status.ok()) << status.error_message();
          results[p][step] = result.SerializeAsString();
        }
      });
    }
    for (std::thread& t : threads) t.join();
  };
  report_all(coordinator->target);
  const std::vector<std::vector<std::string>> first = results;
  EXPECT_EQ(first[0], first[1]);

  // A second coordinator on the same database does not start.
  absl::StatusOr<std::string> other_dir = MakeScratchDir("second");
  ASSERT_TRUE(other_dir.ok());
  absl::StatusOr<LocalCoordinator> second =
      StartLocalCoordinator(binary, *other_dir, flags);
  EXPECT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(),
              HasSubstr("another coordinator holds this PostgreSQL database"));

  // The rounds are rows a dashboard can query.
  {
    absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
        server::PgConnection::Connect(*dsn);
    ASSERT_TRUE(db.ok()) << db.status();
    absl::StatusOr<server::PgResult> rows = (*db)->Exec(
        "SELECT step, total_norm, action FROM rounds WHERE run_id = $1 "
        "ORDER BY step",
        {server::PgParam::Text("pg-run")});
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_EQ(rows->rows(), kSteps);
    for (int step = 0; step < kSteps; ++step) {
      v1::RoundResult result;
      ASSERT_TRUE(result.ParseFromString(first[0][step]));
      EXPECT_EQ(rows->Int64(step, 0), step);
      EXPECT_EQ(rows->Float64(step, 1), result.total_norm());
      EXPECT_EQ(rows->Int32(step, 2), result.action());
    }
  }

  // SIGKILL, start again: every retry gets the identical result.
  coordinator->process->Kill();
  coordinator = StartLocalCoordinator(binary, *dir, flags);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  report_all(coordinator->target);
  EXPECT_EQ(results, first);
  TestClient client(NewChannel(coordinator->target));
  v1::RunInfo run;
  ASSERT_TRUE(client.GetRun("pg-run", &run).ok());
  EXPECT_EQ(run.rounds(), static_cast<uint64_t>(kSteps));
}

// Two coordinators on one database: the active one and a standby. Two jobs
// report through CoordinatorClient with both addresses in one target; the
// active coordinator is killed mid-run; the standby takes over, the clients'
// retries reach it, and every step completes with both jobs given the same
// result, none lost.
TEST(CoordinatorPostgresTest, AStandbyTakesOverAndClientsFailOver) {
  constexpr int kRunSteps = 60;
  absl::StatusOr<std::unique_ptr<server::LocalPostgres>> pg =
      server::LocalPostgres::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  absl::StatusOr<std::string> dsn = (*pg)->CreateDatabase("gradnorm");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  absl::StatusOr<std::string> dir = MakeScratchDir("standby");
  ASSERT_TRUE(dir.ok());
  const int active_port = FreeLoopbackPort();
  const int standby_port = FreeLoopbackPort();
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";
  const std::string dsn_flag = "--postgres_dsn=" + *dsn;
  absl::StatusOr<LocalCoordinator> active =
      StartLocalCoordinator(binary, *dir,
                            {"--store=postgres", dsn_flag,
                             absl::StrCat("--listen=127.0.0.1:", active_port)});
  ASSERT_TRUE(active.ok()) << active.status();
  const std::string standby_port_file = *dir + "/standby.port";
  ChildOptions standby_options;
  standby_options.output_path = *dir + "/standby.log";
  const int standby_health_port = FreeLoopbackPort();
  absl::StatusOr<std::unique_ptr<ChildProcess>> standby = ChildProcess::Start(
      {binary, "--store=postgres", dsn_flag, "--postgres_standby",
       absl::StrCat("--listen=127.0.0.1:", standby_port),
       absl::StrCat("--health_listen=127.0.0.1:", standby_health_port),
       "--port_file=" + standby_port_file},
      standby_options);
  ASSERT_TRUE(standby.ok()) << standby.status();
  // Standing by, its health port answers: not serving reports, but alive.
  ASSERT_TRUE(WaitUntilListening(standby_health_port));
  TestClient standby_probe(
      NewChannel(absl::StrCat("127.0.0.1:", standby_health_port)));
  EXPECT_EQ(standby_probe.Health(), "NOT_SERVING");
  EXPECT_EQ(standby_probe.Health("gradnorm.v1.Process"), "SERVING");

  CoordinatorClientOptions options;
  options.target =
      absl::StrCat("ipv4:127.0.0.1:", active_port, ",127.0.0.1:", standby_port);
  options.initial_backoff = absl::Milliseconds(50);
  options.max_backoff = absl::Milliseconds(500);
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> admin =
      CoordinatorClient::Create(options);
  ASSERT_TRUE(admin.ok()) << admin.status();
  v1::RunConfig config;
  config.set_participants(2);
  config.set_max_norm(3.0);
  config.set_inexact(true);  // doubles are reported
  ASSERT_TRUE(
      (*admin)
          ->RegisterRun("ha-run", config, absl::Now() + absl::Seconds(20))
          .ok());

  std::vector<std::vector<std::string>> results(
      2, std::vector<std::string>(kRunSteps));
  std::atomic<int> done_steps{0};
  std::atomic<int64_t> killed_at_micros{0};
  absl::Mutex mu;
  absl::Duration longest_wait_after_kill;
  std::vector<std::thread> jobs;
  for (int p = 0; p < 2; ++p) {
    jobs.emplace_back([&, p] {
      absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
          CoordinatorClient::Create(options);
      ASSERT_TRUE(client.ok()) << client.status();
      for (int step = 0; step < kRunSteps; ++step) {
        v1::ReportRequest request;
        request.set_run_id("ha-run");
        request.set_step(step);
        request.set_participant(p);
        request.set_partial(Partial(p, step));
        const absl::Time start = absl::Now();
        absl::StatusOr<v1::RoundResult> result =
            (*client)->Report(request, absl::Now() + absl::Seconds(120));
        ASSERT_TRUE(result.ok()) << "step " << step << ": " << result.status();
        results[p][step] = result->SerializeAsString();
        // A report in flight at the kill, or started after it: how long
        // after the later of the two its answer came.
        if (const int64_t killed = killed_at_micros.load(); killed != 0) {
          const absl::Time from = std::max(start, absl::FromUnixMicros(killed));
          absl::MutexLock lock(&mu);
          longest_wait_after_kill =
              std::max(longest_wait_after_kill, absl::Now() - from);
        }
        if (p == 0) ++done_steps;
      }
    });
  }
  while (done_steps.load() < kRunSteps / 3)
    absl::SleepFor(absl::Milliseconds(5));
  killed_at_micros = absl::ToUnixMicros(absl::Now());
  active->process->Kill();
  for (std::thread& t : jobs) t.join();
  EXPECT_EQ(results[0], results[1]);
  for (int step = 0; step < kRunSteps; ++step) {
    v1::RoundResult result;
    ASSERT_TRUE(result.ParseFromString(results[0][step])) << step;
    EXPECT_EQ(result.step(), static_cast<uint64_t>(step));
    EXPECT_EQ(result.total_norm(),
              std::sqrt(Partial(0, step) + Partial(1, step)));
  }
  EXPECT_FALSE(ReadWholeFile(standby_port_file).empty())
      << "the standby never took over:\n"
      << LastLinesOf(standby_options.output_path, 10);
  EXPECT_EQ(standby_probe.Health(), "SERVING");
  std::printf("longest wait for an answer after the kill: %.3f s\n",
              absl::ToDoubleSeconds(longest_wait_after_kill));
  // Every round, before and after the kill, is in the database once.
  absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
      server::PgConnection::Connect(*dsn);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<server::PgResult> rows =
      (*db)->Exec("SELECT count(*) FROM rounds WHERE run_id = 'ha-run'");
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ(rows->Int64(0, 0), kRunSteps);
  // The standby stops on SIGTERM like any coordinator.
  (*standby)->Signal(SIGTERM);
  absl::StatusOr<int> code = (*standby)->Wait(absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(code.ok() && *code == 0);
}

// Three coordinators on one database, each a --postgres_standby: whichever
// holds the database serves, the others wait. Eight jobs train while a random
// coordinator (serving or standing by) is killed with SIGKILL every 0.2-0.6 s
// and started again at once, at least 20 times and at least 8 times the one
// serving. Every job finishes every step, the jobs agree on every result, each
// total is the exact one, and the database holds each round once with the
// result the jobs got.
TEST(CoordinatorPostgresTest, JobsFinishWhileRandomCoordinatorsAreKilled) {
  constexpr int kJobs = 8;
  constexpr int kKills = 20;
  constexpr int kServingKills = 8;
  absl::StatusOr<SharedDatabase> shared =
      SharedDatabase::Start("chaos", 3, "chaos-run", kJobs);
  ASSERT_TRUE(shared.ok()) << shared.status();
  const std::string& dsn = shared->dsn;
  demo::CoordinatorReplicas* replicas = shared->replicas.get();
  const CoordinatorClientOptions options = FastRetries(replicas->target());

  const KillsOutcome outcome = TrainWhileKilling(
      *replicas, [&](int) { return options; }, "chaos-run", kJobs, kKills,
      kServingKills, 2026);
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  EXPECT_GE(outcome.serving_kills, kServingKills)
      << "in " << outcome.kills << " kills";
  std::printf(
      "%d kills (%d of the coordinator serving) during %lld steps; longest "
      "wait for an answer: %.3f s\n",
      outcome.kills, outcome.serving_kills,
      static_cast<long long>(outcome.steps),
      absl::ToDoubleSeconds(outcome.longest));
  ExpectEveryRoundOnceAndAgreed(dsn, "chaos-run", outcome.logs, outcome.steps);
  EXPECT_TRUE(replicas->StopAll().ok());
}

// The database stops mid-run and starts again 1.5 s later, under an active
// coordinator and a standby: the coordinator whose store failed restarts
// itself in-process (its ports close meanwhile), the jobs retry, and once the
// database is back one of the two serves again; every job finishes every
// step, the jobs agree, and each round is stored once.
TEST(CoordinatorPostgresTest, JobsFinishAcrossADatabaseRestart) {
  constexpr int kJobs = 4;
  constexpr int kRunSteps = 300;
  absl::StatusOr<SharedDatabase> shared =
      SharedDatabase::Start("dbrestart", 2, "db-restart", kJobs);
  ASSERT_TRUE(shared.ok()) << shared.status();
  const std::string& dsn = shared->dsn;
  demo::CoordinatorReplicas* replicas = shared->replicas.get();
  const CoordinatorClientOptions options = FastRetries(replicas->target());

  // While the database is gone, neither coordinator serves: each health
  // port answers NOT_SERVING (once the one serving has failed to commit a
  // round), and the process stays up.
  const RestartOutcome outcome = TrainAcrossDatabaseRestart(
      *shared, [&](int) { return options; }, "db-restart", kJobs, kRunSteps, 2);
  ASSERT_TRUE(outcome.status.ok()) << outcome.status;
  EXPECT_EQ(outcome.not_serving_while_down, 2);
  EXPECT_EQ(outcome.alive_while_down, 2);
  // Back: one serves again.
  bool serving_again = false;
  for (int i = 0; i < 2; ++i) {
    TestClient probe(
        NewChannel(absl::StrCat("127.0.0.1:", replicas->health_port(i))));
    serving_again = serving_again || probe.Health() == "SERVING";
  }
  EXPECT_TRUE(serving_again);
  std::printf("the database stopped at step %lld of %d\n",
              static_cast<long long>(outcome.stopped_at), kRunSteps);
  ExpectEveryRoundOnceAndAgreed(dsn, "db-restart", outcome.logs, kRunSteps);
  EXPECT_TRUE(replicas->StopAll().ok());
}

// Flags that cannot work are refused at start, naming what was expected.
TEST(CoordinatorPostgresTest, PostgresFlagsThatCannotWorkAreRefused) {
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";
  struct Case {
    std::vector<std::string> flags;
    std::string says;
  };
  const Case cases[] = {
      {{"--postgres_standby"},
       "--postgres_standby with --store=sqlite: a standby waits for a "
       "PostgreSQL database; expected --store=postgres"},
      {{"--store=postgres"}, "--store=postgres needs --postgres_dsn"},
      {{"--replica"},
       "--replica with --store=sqlite: replicas share a PostgreSQL "
       "database; expected --store=postgres"},
      {{"--store=postgres", "--postgres_dsn=host=/nonexistent", "--replica",
        "--peer_listen=0.0.0.0:0"},
       "--replica with --peer_listen=0.0.0.0:0, a wildcard address: expected "
       "--advertise_host"},
      {{"--store=postgres", "--postgres_dsn=host=/nonexistent", "--replica",
        "--peer_listen=127.0.0.1:0", "--tls_cert=/nonexistent.crt",
        "--tls_key=/nonexistent.key"},
       "replicas serving TLS reach each other over TLS: expected the PEM CA "
       "of the coordinators' certificate (--peer_tls_ca)"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> argv = {binary, "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), c.flags.begin(), c.flags.end());
    absl::StatusOr<CommandOutput> out =
        RunCommand(argv, ChildOptions(), absl::Now() + absl::Seconds(30));
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->exit_code, 1) << out->output;
    EXPECT_THAT(out->output, HasSubstr("INVALID_ARGUMENT: " + c.says));
  }
}

}  // namespace
}  // namespace gradnorm
