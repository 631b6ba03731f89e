// The coordinator binary on a real PostgreSQL (started by the test): rounds
// reported by two participants are in the database, as plain SQL rows; a
// coordinator killed with SIGKILL and started again answers every retry with
// the identical result; a second coordinator on the same database is refused
// at start.
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/local_postgres.h"
#include "server/store/postgres_connection.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;

constexpr int kSteps = 20;

double Partial(int participant, int step) {
  return 1.0 + participant + 0.5 * step;
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

}  // namespace
}  // namespace gradnorm
