// The PostgreSQL leader directory against a real PostgreSQL (LocalPostgres):
// it finds the holder of the coordinators' lock and its advertised address,
// learns of a new holder by NOTIFY (the recheck is set far beyond the test,
// so nothing else could wake it), forgets a holder that is gone, and answers
// UNAVAILABLE when no one holds the database.
#include "server/store/postgres_leader_directory.h"

#include <atomic>
#include <memory>
#include <string>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/store/local_postgres.h"
#include "server/store/postgres_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

// Lookup's answer, waited for.
struct Answer {
  absl::Notification done;
  absl::StatusOr<std::string> address = absl::UnknownError("unanswered");
  absl::Time when;
  LeaderDirectory::LookupCallback Callback() {
    return [this](absl::StatusOr<std::string> result) {
      address = std::move(result);
      when = absl::Now();
      done.Notify();
    };
  }
};

class PostgresLeaderDirectoryTest : public testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<LocalPostgres>> pg = LocalPostgres::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    pg_ = *std::move(pg);
    absl::StatusOr<std::string> dsn = pg_->CreateDatabase("leader");
    ASSERT_TRUE(dsn.ok()) << dsn.status();
    dsn_ = *dsn;
  }

  std::unique_ptr<PostgresTelemetryStore> OpenStore(bool standby = false) {
    PostgresStoreOptions options;
    options.dsn = dsn_;
    options.standby = standby;
    absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
        PostgresTelemetryStore::Open(options);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  std::unique_ptr<LocalPostgres> pg_;
  std::string dsn_;
};

TEST_F(PostgresLeaderDirectoryTest, NoHolderAnswersUnavailableAtTheDeadline) {
  Answer answer;
  PostgresLeaderDirectory directory({.dsn = dsn_});
  const absl::Time start = absl::Now();
  directory.Lookup(start + absl::Milliseconds(300), answer.Callback());
  ASSERT_TRUE(answer.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(answer.address.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(answer.address.status().message(),
              HasSubstr("no coordinator holds the database"));
  EXPECT_GE(answer.when - start, absl::Milliseconds(300));
  EXPECT_FALSE(directory.Known());
}

TEST_F(PostgresLeaderDirectoryTest, AHolderThatAdvertisesNothingIsNoLeader) {
  std::unique_ptr<PostgresTelemetryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::StatusOr<std::unique_ptr<PgConnection>> db =
      PgConnection::Connect(dsn_);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::StatusOr<std::string> holder =
      PostgresLeaderDirectory::ReadHolder(**db);
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ(*holder, "");
  ASSERT_TRUE(store->Advertise("127.0.0.1:4001").ok());
  holder = PostgresLeaderDirectory::ReadHolder(**db);
  ASSERT_TRUE(holder.ok()) << holder.status();
  EXPECT_EQ(*holder, "127.0.0.1:4001");
}

TEST_F(PostgresLeaderDirectoryTest, RefusesAnAddressLongerThanPostgresKeeps) {
  std::unique_ptr<PostgresTelemetryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  absl::Status status = store->Advertise(std::string(64, 'h'));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("expected host:port of 1 to 63"));
}

TEST_F(PostgresLeaderDirectoryTest, LearnsOfEachNewHolderByNotify) {
  std::atomic<int> known_changes{0};
  PostgresLeaderDirectoryOptions options;
  options.dsn = dsn_;
  options.recheck = absl::Hours(1);  // only a notification can wake it
  options.on_known = [&](bool) { ++known_changes; };
  Answer first;
  Answer again;
  Answer second;
  PostgresLeaderDirectory directory(options);

  // A lookup waiting before anyone holds the database.
  directory.Lookup(absl::Now() + absl::Seconds(30), first.Callback());
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(first.done.HasBeenNotified());
  std::unique_ptr<PostgresTelemetryStore> a = OpenStore();
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->Advertise("127.0.0.1:4001").ok());
  const absl::Time advertised = absl::Now();
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(first.address.ok()) << first.address.status();
  EXPECT_EQ(*first.address, "127.0.0.1:4001");
  EXPECT_LT(first.when - advertised, absl::Seconds(1));
  EXPECT_TRUE(directory.Known());

  // Known now: answered at once, without asking the database.
  const int queries = directory.queries();
  directory.Lookup(absl::Now() + absl::Seconds(1), again.Callback());
  ASSERT_TRUE(again.done.HasBeenNotified());
  EXPECT_EQ(*again.address, "127.0.0.1:4001");
  EXPECT_EQ(directory.queries(), queries);

  // The holder goes (its session ends, and the lock with it); a standby
  // takes over. The failed address is forgotten, and the next lookup is
  // answered with the standby's once it advertises.
  a.reset();
  directory.Forget("127.0.0.1:4001");
  directory.Lookup(absl::Now() + absl::Seconds(30), second.Callback());
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_FALSE(second.done.HasBeenNotified());
  EXPECT_FALSE(directory.Known());
  std::unique_ptr<PostgresTelemetryStore> b = OpenStore(/*standby=*/true);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->Advertise("127.0.0.1:4002").ok());
  ASSERT_TRUE(second.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(second.address.ok()) << second.address.status();
  EXPECT_EQ(*second.address, "127.0.0.1:4002");
  EXPECT_EQ(known_changes.load(), 3);  // known, unknown, known
}

// A Lookup made while the read that follows a Forget is under way (the
// directory's thread is held just before it) waits for that read rather than
// answer the address just forgotten; the holder is alive, so it is answered
// once the hold-back ends.
TEST_F(PostgresLeaderDirectoryTest, ALookupDuringTheReadAfterForgetWaits) {
  std::unique_ptr<PostgresTelemetryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Advertise("127.0.0.1:4001").ok());
  std::atomic<bool> hold{false};
  absl::Notification held;
  absl::Notification release;
  PostgresLeaderDirectoryOptions options;
  options.dsn = dsn_;
  options.recheck = absl::Hours(1);  // only the hold-back's rechecks
  options.before_read = [&] {
    if (!hold.exchange(false)) return;
    held.Notify();
    release.WaitForNotification();
  };
  Answer first;
  Answer during;
  PostgresLeaderDirectory directory(options);
  directory.Lookup(absl::Now() + absl::Seconds(10), first.Callback());
  ASSERT_TRUE(first.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_EQ(*first.address, "127.0.0.1:4001");

  hold = true;
  directory.Forget("127.0.0.1:4001");
  ASSERT_TRUE(held.WaitForNotificationWithTimeout(absl::Seconds(10)));
  directory.Lookup(absl::Now() + absl::Seconds(10), during.Callback());
  EXPECT_FALSE(during.done.HasBeenNotified());
  release.Notify();
  ASSERT_TRUE(during.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(during.address.ok()) << during.address.status();
  EXPECT_EQ(*during.address, "127.0.0.1:4001");
}

// A call to a holder that is alive failed (a blip): the directory forgets it
// for a moment, then knows it again by itself, with no lookup asking (a
// replica's health, and so its readiness, must not stay NOT_SERVING).
TEST_F(PostgresLeaderDirectoryTest, AForgottenHolderThatIsAliveIsKnownAgain) {
  std::unique_ptr<PostgresTelemetryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Advertise("127.0.0.1:4001").ok());
  Answer answer;
  PostgresLeaderDirectory directory({.dsn = dsn_});
  directory.Lookup(absl::Now() + absl::Seconds(10), answer.Callback());
  ASSERT_TRUE(answer.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(directory.Known());
  directory.Forget("127.0.0.1:4001");
  for (int i = 0; i < 40 && directory.Known(); ++i) {
    absl::SleepFor(absl::Milliseconds(25));
  }
  EXPECT_FALSE(directory.Known());  // held back
  for (int i = 0; i < 100 && !directory.Known(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(directory.Known());
}

// The holder dies and comes back on the same address (a restarted process
// on its old port): its notification ends the hold-back at once.
TEST_F(PostgresLeaderDirectoryTest, AHolderBackOnTheSameAddressIsKnownAtOnce) {
  std::unique_ptr<PostgresTelemetryStore> first = OpenStore();
  ASSERT_NE(first, nullptr);
  ASSERT_TRUE(first->Advertise("127.0.0.1:4001").ok());
  Answer answer;
  Answer again;
  PostgresLeaderDirectoryOptions options;
  options.dsn = dsn_;
  options.recheck = absl::Hours(1);  // the hold-back lasts its full second
  PostgresLeaderDirectory directory(options);
  directory.Lookup(absl::Now() + absl::Seconds(10), answer.Callback());
  ASSERT_TRUE(answer.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  first.reset();
  directory.Forget("127.0.0.1:4001");
  absl::SleepFor(absl::Milliseconds(100));
  std::unique_ptr<PostgresTelemetryStore> second = OpenStore(/*standby=*/true);
  ASSERT_NE(second, nullptr);
  directory.Lookup(absl::Now() + absl::Seconds(10), again.Callback());
  const absl::Time advertised = absl::Now();
  ASSERT_TRUE(second->Advertise("127.0.0.1:4001").ok());
  ASSERT_TRUE(again.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(again.address.ok()) << again.address.status();
  EXPECT_EQ(*again.address, "127.0.0.1:4001");
  EXPECT_LT(again.when - advertised, absl::Milliseconds(500));
}

TEST_F(PostgresLeaderDirectoryTest, IsNotKnownWhileTheDatabaseIsGone) {
  std::unique_ptr<PostgresTelemetryStore> store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Advertise("127.0.0.1:4001").ok());
  PostgresLeaderDirectoryOptions options;
  options.dsn = dsn_;
  options.recheck = absl::Milliseconds(100);
  // Answers outlive the directory: it answers its waiters when destroyed.
  Answer answer;
  Answer waiting;
  PostgresLeaderDirectory directory(options);
  directory.Lookup(absl::Now() + absl::Seconds(10), answer.Callback());
  ASSERT_TRUE(answer.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(directory.Known());

  ASSERT_TRUE(pg_->Stop().ok());
  for (int i = 0; i < 100 && directory.Known(); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_FALSE(directory.Known());
  directory.Lookup(absl::Now() + absl::Seconds(30), waiting.Callback());
  ASSERT_TRUE(pg_->Restart().ok());
  // The store takes the lock again, and advertises again, on its next write.
  RunRecord run;
  run.run_id = "r";
  run.config.set_participants(1);
  // The first statement finds the old connection broken (UNAVAILABLE).
  absl::Status put = store->PutRun(run);
  if (!put.ok()) put = store->PutRun(run);
  ASSERT_TRUE(put.ok()) << put;
  ASSERT_TRUE(waiting.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(waiting.address.ok()) << waiting.address.status();
  EXPECT_EQ(*waiting.address, "127.0.0.1:4001");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
