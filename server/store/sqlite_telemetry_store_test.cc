#include "server/store/sqlite_telemetry_store.h"

#include <sqlite3.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/core/aggregator.h"
#include "server/core/clock.h"
#include "server/store/telemetry_store_test_suite.h"

namespace gradnorm {
namespace server {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

std::unique_ptr<SqliteTelemetryStore> OpenOrDie(const std::string& path) {
  SqliteStoreOptions options;
  options.path = path;
  // NORMAL keeps the suite fast on slow disks; FULL is tested below.
  options.synchronous_full = false;
  absl::StatusOr<std::unique_ptr<SqliteTelemetryStore>> store =
      SqliteTelemetryStore::Open(options);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? *std::move(store) : nullptr;
}

INSTANTIATE_TEST_SUITE_P(
    Sqlite, TelemetryStoreTest,
    testing::Values(TelemetryStoreFactory{
        "sqlite",
        [](const std::string& dir) -> std::unique_ptr<TelemetryStore> {
          return OpenOrDie(dir + "/telemetry.db");
        }}),
    [](const testing::TestParamInfo<TelemetryStoreFactory>& info) {
      return info.param.name;
    });

std::string TestPath(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string path = absl::StrCat(tmp ? tmp : "/tmp", "/", name, ".db");
  std::remove(path.c_str());
  std::remove((path + "-wal").c_str());
  std::remove((path + "-shm").c_str());
  return path;
}

RunRecord MakeRun(const std::string& id, uint32_t participants) {
  RunRecord run;
  run.run_id = id;
  run.config.set_norm_type(2);
  run.config.set_max_norm(1);
  run.config.set_participants(participants);
  run.created_unix_micros = 42;
  return run;
}

TEST(SqliteTelemetryStoreTest, ReopenedFileHoldsEverythingAndIsIntact) {
  const std::string path = TestPath("reopen");
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  {
    SqliteStoreOptions options;
    options.path = path;  // synchronous FULL, the default.
    auto store = SqliteTelemetryStore::Open(options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->PutRun(MakeRun("r", 3)).ok());
    ASSERT_TRUE(
        AppendAndWait(store->get(), MakeRoundRecord("r", 4, 1, 2, 3)).ok());
    ASSERT_TRUE(
        AppendAndWait(store->get(), MakeRoundRecord("r", 2, 2, kNaN, 3)).ok());
    ASSERT_TRUE(
        (*store)->PutAbandonedStep({"r", 6, "participant 1 missing"}).ok());
    // Queued but never waited for: the destructor still commits it.
    (*store)->AppendRound(MakeRoundRecord("r", 9, 3, 0.5, 3),
                          [](absl::Status) {});
  }
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->CheckIntegrity().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 1u);
  EXPECT_EQ(contents->runs[0].config.participants(), 3u);
  ASSERT_EQ(contents->rounds.size(), 3u);
  EXPECT_EQ(contents->rounds[0].result.step(), 4u);
  EXPECT_TRUE(std::isnan(contents->rounds[1].result.total_norm()));
  EXPECT_TRUE(std::isnan(contents->rounds[1].participants[1].partial));
  EXPECT_EQ(contents->rounds[2].result.step(), 9u);
  EXPECT_EQ(contents->rounds[2].participants[2].num_elements, 1002u);
  ASSERT_EQ(contents->abandoned.size(), 1u);
  EXPECT_EQ(contents->abandoned[0].step, 6u);
  EXPECT_EQ(contents->abandoned[0].why, "participant 1 missing");
}

TEST(SqliteTelemetryStoreTest, GroupCommitBatchesAppendsMadeDuringACommit) {
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(TestPath("group"));
  ASSERT_TRUE(store->PutRun(MakeRun("r", 2)).ok());
  const uint64_t before = store->transactions();
  constexpr int kRecords = 400;
  std::atomic<int> ok{0};
  absl::Notification first_committing;
  absl::Notification others_appended;
  // The first record commits on its appending thread; its callback holds that
  // commit open until every other record was appended meanwhile.
  std::thread first([&] {
    store->AppendRound(MakeRoundRecord("r", 0, 1, 1.5, 2), [&](absl::Status s) {
      ok += s.ok();
      first_committing.Notify();
      others_appended.WaitForNotificationWithTimeout(absl::Seconds(30));
    });
  });
  ASSERT_TRUE(
      first_committing.WaitForNotificationWithTimeout(absl::Seconds(30)));
  for (int i = 1; i < kRecords; ++i) {
    // Returns at once: the running committer takes the record.
    store->AppendRound(MakeRoundRecord("r", i, i + 1, 1.5, 2),
                       [&](absl::Status s) { ok += s.ok(); });
  }
  others_appended.Notify();
  first.join();
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(ok.load(), kRecords);
  // One transaction for the first record, one for the 399 queued behind it.
  EXPECT_EQ(store->transactions() - before, 2u);
  EXPECT_TRUE(store->CheckIntegrity().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(contents->rounds.size(), static_cast<size_t>(kRecords));
}

// Each commit's callback appends the next round, so the store never runs
// dry: the thread that appended the first commits one transaction and returns
// (it may be a gRPC handler, or PutRun waiting for its run); the writer
// thread commits the rest.
TEST(SqliteTelemetryStoreTest, AnAppendersThreadCommitsOneTransaction) {
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(TestPath("chain"));
  ASSERT_TRUE(store->PutRun(MakeRun("r", 1)).ok());
  constexpr int kRounds = 200;
  std::atomic<int> committed{0};
  std::function<void(int)> append = [&](int step) {
    store->AppendRound(MakeRoundRecord("r", step, step + 1, 1.5, 1),
                       [&, step](absl::Status s) {
                         EXPECT_TRUE(s.ok()) << s;
                         ++committed;
                         if (step + 1 < kRounds) append(step + 1);
                       });
  };
  append(0);
  // Step 0 is committed and step 1 queued; the rest is the writer's.
  EXPECT_LT(committed.load(), kRounds);
  for (absl::Time until = absl::Now() + absl::Seconds(30);
       committed.load() < kRounds && absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(committed.load(), kRounds);
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok());
  EXPECT_EQ(contents->rounds.size(), static_cast<size_t>(kRounds));
}

TEST(SqliteTelemetryStoreTest, RoundOfUnknownRunIsRefused) {
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(TestPath("fk"));
  absl::Status status =
      AppendAndWait(store.get(), MakeRoundRecord("ghost", 1, 1, 1, 1));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("FOREIGN KEY constraint failed"));
  // One refused record does not take the batch's others with it.
  ASSERT_TRUE(store->PutRun(MakeRun("r", 1)).ok());
  EXPECT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("r", 1, 1, 1, 1)).ok());
}

TEST(SqliteTelemetryStoreTest, OpenErrorsAreTranslated) {
  SqliteStoreOptions options;
  options.path = "/nonexistent-dir/gradnorm.db";
  auto missing = SqliteTelemetryStore::Open(options);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("open /nonexistent-dir/gradnorm.db failed: unable to "
                        "open database file"));

  const std::string garbage = TestPath("garbage");
  std::ofstream(garbage) << std::string(4096, 'x');
  options.path = garbage;
  auto not_a_db = SqliteTelemetryStore::Open(options);
  EXPECT_EQ(not_a_db.status().code(), absl::StatusCode::kDataLoss)
      << not_a_db.status();
}

TEST(SqliteTelemetryStoreTest, SecondStoreOnTheSameFileIsRefused) {
  const std::string path = TestPath("exclusive");
  std::unique_ptr<SqliteTelemetryStore> first = OpenOrDie(path);
  ASSERT_NE(first, nullptr);
  SqliteStoreOptions options;
  options.path = path;
  options.busy_timeout_ms = 50;
  auto second = SqliteTelemetryStore::Open(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition)
      << second.status();
  EXPECT_THAT(second.status().message(),
              HasSubstr("is locked by another process (another coordinator on "
                        "the same database?); waited 50 ms"));
  // The first store is untouched and keeps working.
  ASSERT_TRUE(first->PutRun(MakeRun("r", 1)).ok());
  EXPECT_TRUE(
      AppendAndWait(first.get(), MakeRoundRecord("r", 1, 1, 1, 1)).ok());
  first.reset();
  EXPECT_NE(OpenOrDie(path), nullptr);
}

// Runs `sql` on a fresh connection to `path`; fails the test on error.
void ExecOnFile(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error), SQLITE_OK)
      << (error ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

// The tables an older coordinator wrote (schema 1: participants in a table of
// their own; schema 2: in a BLOB of the round), with run "old" (2
// participants) stored.
std::string OldSchemaWithRun(int version) {
  const std::string config = MakeRun("old", 2).config.SerializeAsString();
  std::string config_hex;
  for (unsigned char c : config)
    absl::StrAppend(&config_hex, absl::Hex(c, absl::kZeroPad2));
  return absl::StrCat(R"sql(
    PRAGMA journal_mode=WAL;
    CREATE TABLE runs (run_id TEXT PRIMARY KEY, config BLOB NOT NULL,
      created_unix_micros INTEGER NOT NULL);
    CREATE TABLE rounds (run_id TEXT NOT NULL REFERENCES runs(run_id),
      step INTEGER NOT NULL, sequence INTEGER NOT NULL, total_norm REAL,
      clip_coef REAL NOT NULL, action INTEGER NOT NULL, reason INTEGER NOT NULL,
      reason_detail TEXT NOT NULL, effective_max_norm REAL NOT NULL,
      arrival_spread_seconds REAL NOT NULL, slowest_participant INTEGER NOT NULL,
      finalized_unix_micros INTEGER NOT NULL,)sql",
                      version >= 2 ? " participants BLOB NOT NULL," : "", R"sql(
      PRIMARY KEY (run_id, step)) WITHOUT ROWID;
    INSERT INTO runs VALUES ('old', x')sql",
                      config_hex, R"sql(', 7);
  )sql");
}

// A file written by a schema-1 coordinator (participants in a table of their
// own, NaN partials as NULL) is migrated at Open and loses nothing.
TEST(SqliteTelemetryStoreTest, SchemaOneFileIsMigrated) {
  const std::string path = TestPath("schema1");
  ExecOnFile(path, absl::StrCat(OldSchemaWithRun(1), R"sql(
    CREATE TABLE participants (run_id TEXT NOT NULL, step INTEGER NOT NULL,
      participant INTEGER NOT NULL, partial REAL,
      arrival_offset_seconds REAL NOT NULL, num_elements INTEGER NOT NULL,
      PRIMARY KEY (run_id, step, participant),
      FOREIGN KEY (run_id, step) REFERENCES rounds(run_id, step)) WITHOUT ROWID;
    INSERT INTO rounds VALUES ('old', 5, 1, 5.0, 1.0, 1, 1, '', 10.0, 0.25, 1, 100);
    INSERT INTO rounds VALUES ('old', 6, 2, NULL, 0.0, 3, 4, 'nan', 10.0, 0.5, 0, 200);
    INSERT INTO participants VALUES ('old', 5, 0, 9.0, 0.0, 10);
    INSERT INTO participants VALUES ('old', 5, 1, 16.0, 0.25, 20);
    INSERT INTO participants VALUES ('old', 6, 0, NULL, 0.5, 10);
    INSERT INTO participants VALUES ('old', 6, 1, 4.0, 0.0, 20);
    PRAGMA user_version=1;
  )sql"));

  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->CheckIntegrity().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 1u);
  EXPECT_EQ(contents->runs[0].config.participants(), 2u);
  // Registered before runs could require exact partials: it stays inexact.
  EXPECT_TRUE(contents->runs[0].config.inexact());
  ASSERT_EQ(contents->rounds.size(), 2u);
  const RoundRecord& first = contents->rounds[0];
  EXPECT_EQ(first.result.step(), 5u);
  EXPECT_EQ(first.result.total_norm(), 5.0);
  ASSERT_EQ(first.participants.size(), 2u);
  EXPECT_EQ(first.participants[1].partial, 16.0);
  EXPECT_EQ(first.participants[1].arrival_offset_seconds, 0.25);
  EXPECT_EQ(first.participants[1].num_elements, 20u);
  const RoundRecord& second = contents->rounds[1];
  EXPECT_TRUE(std::isnan(second.result.total_norm()));
  ASSERT_EQ(second.participants.size(), 2u);
  EXPECT_TRUE(std::isnan(second.participants[0].partial));
  EXPECT_EQ(second.participants[1].partial, 4.0);
  // New rounds go in beside the migrated ones, and survive a reopen.
  EXPECT_TRUE(
      AppendAndWait(store.get(), MakeRoundRecord("old", 7, 3, 2.0, 2)).ok());
  store.reset();
  store = OpenOrDie(path);
  contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(contents->rounds.size(), 3u);
}

// A schema 2 file (before abandoned steps were stored) gets their table at
// Open and keeps its rounds.
TEST(SqliteTelemetryStoreTest, SchemaTwoFileGainsAbandonedSteps) {
  const std::string path = TestPath("schema2");
  ExecOnFile(path, absl::StrCat(OldSchemaWithRun(2), R"sql(
    PRAGMA user_version=2;
  )sql"));
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(path);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->PutAbandonedStep({"old", 3, "timed out"}).ok());
  store.reset();
  store = OpenOrDie(path);
  EXPECT_TRUE(store->CheckIntegrity().ok());
  absl::StatusOr<StoreContents> contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 1u);
  EXPECT_TRUE(contents->runs[0].config.inexact());
  // A run registered after the migration keeps its own choice.
  ASSERT_TRUE(store->PutRun(MakeRun("new", 2)).ok());
  store.reset();
  store = OpenOrDie(path);
  contents = store->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  ASSERT_EQ(contents->runs.size(), 2u);
  for (const RunRecord& run : contents->runs) {
    EXPECT_EQ(run.config.inexact(), run.run_id == "old") << run.run_id;
  }
  ASSERT_EQ(contents->abandoned.size(), 1u);
  EXPECT_EQ(contents->abandoned[0].why, "timed out");
}

// The Aggregator on a real file: a restarted coordinator answers retries of
// acknowledged rounds with the identical result and completes unfinished
// ones.
TEST(AggregatorOnSqliteTest, RestartKeepsAcknowledgedRounds) {
  const std::string path = TestPath("aggregator");
  FakeClock clock;
  AggregatorOptions options;
  options.expiry_interval = absl::ZeroDuration();
  v1::RegisterRunRequest run;
  run.set_run_id("job");
  run.mutable_config()->set_participants(2);
  run.mutable_config()->set_max_norm(1);
  run.mutable_config()->set_inexact(true);  // doubles are reported
  run.mutable_config()
      ->mutable_clip_policy()
      ->mutable_auto_clip()
      ->set_warmup_steps(2);

  // Reports and returns a function that waits for the outcome.
  struct Pending {
    absl::Mutex mu;
    std::optional<absl::StatusOr<v1::RoundResult>> out;
  };
  auto report = [](Aggregator& a, uint64_t step, uint32_t p, double partial) {
    v1::ReportRequest r;
    r.set_run_id("job");
    r.set_step(step);
    r.set_participant(p);
    r.set_partial(partial);
    auto pending = std::make_shared<Pending>();
    a.Report(r, absl::InfiniteFuture(),
             [pending](absl::StatusOr<v1::RoundResult> result) {
               absl::MutexLock lock(&pending->mu);
               pending->out = std::move(result);
             });
    return [pending]() {
      absl::MutexLock lock(&pending->mu);
      auto has = [&pending] { return pending->out.has_value(); };
      pending->mu.Await(absl::Condition(&has));
      return *pending->out;
    };
  };

  std::vector<v1::RoundResult> acknowledged;
  {
    std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(path);
    auto aggregator = Aggregator::Create(options, store.get(), &clock);
    ASSERT_TRUE(aggregator.ok());
    ASSERT_TRUE((*aggregator)->RegisterRun(run).ok());
    for (uint64_t step = 0; step < 4; ++step) {
      auto wait0 = report(**aggregator, step, 0, 4.0 * step);
      auto wait1 = report(**aggregator, step, 1, 5.0);
      absl::StatusOr<v1::RoundResult> r = wait1();
      ASSERT_TRUE(r.ok()) << r.status();
      acknowledged.push_back(*r);
      ASSERT_TRUE(wait0().ok());
    }
    auto pending = report(**aggregator, 4, 0, 1.0);  // Never completes here.
    EXPECT_TRUE((*aggregator)->Shutdown().ok());
    EXPECT_EQ(pending().status().code(), absl::StatusCode::kUnavailable);
  }
  std::unique_ptr<SqliteTelemetryStore> store = OpenOrDie(path);
  EXPECT_TRUE(store->CheckIntegrity().ok());
  auto aggregator = Aggregator::Create(options, store.get(), &clock);
  ASSERT_TRUE(aggregator.ok()) << aggregator.status();
  absl::StatusOr<v1::RegisterRunResponse> again =
      (*aggregator)->RegisterRun(run);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created());
  EXPECT_EQ(again->run().rounds(), 4u);
  for (uint64_t step = 0; step < 4; ++step) {
    auto retry = report(**aggregator, step, 1, 5.0);
    absl::StatusOr<v1::RoundResult> r = retry();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(MessageDifferencer::Equals(*r, acknowledged[step]))
        << r->ShortDebugString() << "\nvs\n"
        << acknowledged[step].ShortDebugString();
  }
  auto conflict = report(**aggregator, 2, 0, 123.0);
  EXPECT_EQ(conflict().status().code(), absl::StatusCode::kAlreadyExists);
  auto retry0 = report(**aggregator, 4, 0, 1.0);
  auto retry1 = report(**aggregator, 4, 1, 3.0);
  absl::StatusOr<v1::RoundResult> finished = retry1();
  ASSERT_TRUE(finished.ok()) << finished.status();
  EXPECT_EQ(finished->total_norm(), 2);
  // AutoClip (10th percentile of totals 2.24, 3, 3.6, 4.1 after a warm-up
  // of 2) was rebuilt from the file: its max norm is the smallest total.
  EXPECT_EQ(finished->effective_max_norm(), acknowledged[0].total_norm());
  ASSERT_TRUE(retry0().ok());
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
