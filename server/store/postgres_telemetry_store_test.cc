// The PostgreSQL store against a real PostgreSQL, started by the test
// (LocalPostgres): the shared store suite, plus what only a database server
// has (reconnection after it restarts, its schema version).
#include "server/store/postgres_telemetry_store.h"

#include <atomic>
#include <cmath>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/local_postgres.h"
#include "server/store/telemetry_store_test_suite.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

// One server for the whole test binary (a database per store), stopped and
// removed after the last test.
class PostgresEnvironment : public testing::Environment {
 public:
  LocalPostgres& server() {
    if (server_ == nullptr) {
      absl::StatusOr<std::unique_ptr<LocalPostgres>> pg =
          LocalPostgres::Start();
      if (!pg.ok()) {
        ADD_FAILURE() << pg.status();
        std::abort();
      }
      server_ = *std::move(pg);
    }
    return *server_;
  }
  void TearDown() override { server_.reset(); }

 private:
  std::unique_ptr<LocalPostgres> server_;
};

PostgresEnvironment* const environment = static_cast<PostgresEnvironment*>(
    testing::AddGlobalTestEnvironment(new PostgresEnvironment));

LocalPostgres& Server() { return environment->server(); }

// A fresh database named after `hint`.
std::string FreshDsn(const std::string& hint) {
  static std::atomic<int> counter{0};
  std::string name = absl::StrCat("t", counter++, "_", hint);
  for (char& c : name) {
    if (!absl::ascii_isalnum(c)) c = '_';
  }
  name = absl::AsciiStrToLower(name.substr(0, 60));
  absl::StatusOr<std::string> dsn = Server().CreateDatabase(name);
  EXPECT_TRUE(dsn.ok()) << dsn.status();
  return dsn.ok() ? *dsn : "";
}

std::unique_ptr<PostgresTelemetryStore> OpenOrDie(const std::string& dsn) {
  PostgresStoreOptions options;
  options.dsn = dsn;
  absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
      PostgresTelemetryStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

INSTANTIATE_TEST_SUITE_P(
    Postgres, TelemetryStoreTest,
    testing::Values(TelemetryStoreFactory{
        "postgres",
        [](const std::string& dir) -> std::unique_ptr<TelemetryStore> {
          return OpenOrDie(FreshDsn(dir.substr(dir.find_last_of('/') + 1)));
        }}),
    [](const testing::TestParamInfo<TelemetryStoreFactory>& info) {
      return info.param.name;
    });

RunRecord MakeRunRecord(const std::string& id) {
  RunRecord run;
  run.run_id = id;
  run.config.set_norm_type(2);
  run.config.set_max_norm(1);
  run.config.set_participants(2);
  run.created_unix_micros = 1234;
  return run;
}

// Acknowledged records outlive the store (a coordinator's restart), with
// every value as it was: NaN and Inf totals, steps from 2^63 on.
TEST(PostgresTelemetryStoreTest, AcknowledgedRecordsSurviveReopening) {
  const std::string dsn = FreshDsn("reopen");
  {
    std::unique_ptr<PostgresTelemetryStore> store = OpenOrDie(dsn);
    ASSERT_TRUE(store->PutRun(MakeRunRecord("r")).ok());
    ASSERT_TRUE(
        AppendAndWait(store.get(), MakeRoundRecord("r", 5, 1, NAN, 2)).ok());
    ASSERT_TRUE(
        AppendAndWait(store.get(),
                      MakeRoundRecord("r", uint64_t{1} << 63, 2, INFINITY, 2))
            .ok());
    ASSERT_TRUE(
        AppendAndWait(store.get(), MakeRoundRecord("r", 3, 3, 2.5, 2)).ok());
    ASSERT_TRUE(store->PutAbandonedStep({"r", 4, "timed out"}).ok());
    ASSERT_TRUE(store->FinishRun("r", 99).ok());
  }
  std::unique_ptr<PostgresTelemetryStore> store = OpenOrDie(dsn);
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 1u);
  EXPECT_EQ(contents->runs[0].finished_unix_micros, 99);
  EXPECT_EQ(contents->runs[0].config.participants(), 2u);
  ASSERT_EQ(contents->rounds.size(), 3u);
  EXPECT_TRUE(std::isnan(contents->rounds[0].result.total_norm()));
  EXPECT_TRUE(std::isinf(contents->rounds[1].result.total_norm()));
  EXPECT_EQ(contents->rounds[1].result.step(), uint64_t{1} << 63);
  const RoundRecord expected = MakeRoundRecord("r", 3, 3, 2.5, 2);
  EXPECT_EQ(contents->rounds[2].result.SerializeAsString(),
            expected.result.SerializeAsString());
  ASSERT_EQ(contents->rounds[2].participants.size(), 2u);
  EXPECT_EQ(contents->rounds[2].participants[1].partial,
            expected.participants[1].partial);
  // Unsigned step order: 3, 5, then 2^63.
  absl::StatusOr<std::vector<RoundRecord>> range =
      store->ReadRounds("r", 0, ~uint64_t{0}, 0, false);
  ASSERT_TRUE(range.ok()) << range.status();
  ASSERT_EQ(range->size(), 3u);
  EXPECT_EQ((*range)[0].result.step(), 3u);
  EXPECT_EQ((*range)[2].result.step(), uint64_t{1} << 63);
  ASSERT_EQ(contents->abandoned.size(), 1u);
  EXPECT_EQ(contents->abandoned[0].why, "timed out");
}

// The database stops under the store: calls fail with UNAVAILABLE while it
// is down, the store reconnects by itself when it is back, and nothing
// acknowledged is lost.
TEST(PostgresTelemetryStoreTest, SurvivesTheDatabaseRestarting) {
  const std::string dsn = FreshDsn("restart");
  std::unique_ptr<PostgresTelemetryStore> store = OpenOrDie(dsn);
  ASSERT_TRUE(store->PutRun(MakeRunRecord("r")).ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("r", 1, 1, 1.0, 2)).ok());
  ASSERT_TRUE(Server().Stop().ok());
  absl::Status down =
      AppendAndWait(store.get(), MakeRoundRecord("r", 2, 2, 2.0, 2));
  EXPECT_EQ(down.code(), absl::StatusCode::kUnavailable) << down;
  absl::StatusOr<StoreContents> unreadable = store->Load();
  EXPECT_EQ(unreadable.status().code(), absl::StatusCode::kUnavailable);
  ASSERT_TRUE(Server().Restart().ok());
  ASSERT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("r", 2, 2, 2.0, 2)).ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->rounds.size(), 2u);
  EXPECT_EQ(contents->rounds[1].result.total_norm(), 2.0);
}

TEST(PostgresTelemetryStoreTest, ANewerSchemaIsRefused) {
  const std::string dsn = FreshDsn("newer");
  { ASSERT_NE(OpenOrDie(dsn), nullptr); }
  {
    absl::StatusOr<std::unique_ptr<PgConnection>> db =
        PgConnection::Connect(dsn);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(
        (*db)->ExecScript("UPDATE gradnorm_schema SET version = 99").ok());
  }
  PostgresStoreOptions options;
  options.dsn = dsn;
  absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
      PostgresTelemetryStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(),
              HasSubstr("schema version 99, newer than this coordinator's 1"));
}

// One coordinator per database, as SQLite's exclusive lock makes it.
TEST(PostgresTelemetryStoreTest, ASecondCoordinatorOnTheDatabaseIsRefused) {
  const std::string dsn = FreshDsn("second");
  std::unique_ptr<PostgresTelemetryStore> first = OpenOrDie(dsn);
  PostgresStoreOptions options;
  options.dsn = dsn;
  absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> second =
      PostgresTelemetryStore::Open(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(),
              HasSubstr("another coordinator holds this PostgreSQL database"));
  first.reset();
  EXPECT_NE(OpenOrDie(dsn), nullptr);
}

TEST(PostgresTelemetryStoreTest, BadOrUnreachableDatabases) {
  PostgresStoreOptions options;
  options.dsn = "host='unterminated";
  EXPECT_EQ(PostgresTelemetryStore::Open(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.dsn = "host=/nonexistent-gradnorm port=5 connect_timeout=2";
  absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
      PostgresTelemetryStore::Open(options);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(store.status().message(), HasSubstr("cannot connect"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
