// Durability with real processes: the coordinator binary is killed with
// SIGKILL at random moments while 8 participants (threads of this test, each
// with its own channel) report 300 steps, retrying on failure as trainers do.
// After the last restart every acknowledged round must be in the SQLite store,
// identical to what every participant received, every step must have
// completed, and the database must pass PRAGMA integrity_check.
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/child_process.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/sqlite_telemetry_store.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;

constexpr int kParticipants = 8;
constexpr int kSteps = 300;
constexpr char kRun[] = "durable";

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

// The job's partial for a step: deterministic, so a retry repeats it exactly.
double Partial(int participant, int step) {
  return 0.25 * (participant + 1) + 0.001 * step +
         (step % 17 == 0 ? 40.0 : 0.0);
}

class Coordinator {
 public:
  Coordinator(std::string db, int port) : db_(std::move(db)), port_(port) {}

  void Start() {
    ChildOptions options;
    options.output_path = db_ + ".log";
    absl::StatusOr<std::unique_ptr<ChildProcess>> started = ChildProcess::Start(
        {"server/coordinator", absl::StrCat("--listen=127.0.0.1:", port_),
         absl::StrCat("--db=", db_), "--store=sqlite"},
        options);
    ASSERT_TRUE(started.ok()) << started.status();
    child_ = *std::move(started);
  }

  // True once a TCP connection to the port succeeds.
  bool AwaitListening(absl::Time deadline) const {
    sockaddr_in addr = {};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    while (absl::Now() < deadline) {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      const bool up =
          connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
      close(fd);
      if (up) return true;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return false;
  }

  void Kill() { child_->Kill(); }

  // SIGTERM once the coordinator listens (before its main blocks SIGTERM, the
  // default action would kill it, as it would any process); returns the exit
  // code (-2 when it never listened).
  int Terminate() {
    if (!AwaitListening(absl::Now() + absl::Seconds(30))) return -2;
    child_->Signal(SIGTERM);
    absl::StatusOr<int> code = child_->Wait(absl::Now() + absl::Seconds(60));
    return code.ok() ? *code : -1;
  }

 private:
  std::string db_;
  int port_;
  std::unique_ptr<ChildProcess> child_;
};

TEST(CoordinatorDurabilityTest, SigkillLosesNoAcknowledgedRound) {
  const std::string db = TempPath("durability.db");
  const int port = FreeLoopbackPort();
  const std::string target = absl::StrCat("127.0.0.1:", port);
  Coordinator coordinator(db, port);
  coordinator.Start();

  {
    // A loaded machine can take seconds to start the first coordinator; the
    // channel is made only once the port answers, so it does not sit in
    // reconnect backoff, and registration retries against a deadline.
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    ASSERT_TRUE(coordinator.AwaitListening(deadline))
        << "the coordinator never listened on " << target;
    TestClient client(NewChannel(target));
    v1::RunConfig config;
    config.set_norm_type(2);
    config.set_max_norm(5.0);
    config.set_participants(kParticipants);
    config.set_inexact(true);  // doubles are reported
    grpc::Status status;
    do {
      status = client.RegisterRun(kRun, config);
      if (status.ok()) break;
      absl::SleepFor(absl::Milliseconds(25));
    } while (absl::Now() < deadline);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }

  absl::Mutex mu;
  // acknowledged[step][participant]: what that participant was answered.
  std::vector<std::vector<std::string>> acknowledged(
      kSteps, std::vector<std::string>(kParticipants));
  std::atomic<int> finished{0};
  std::atomic<int> retries{0};
  std::atomic<int> acknowledged_count{0};
  std::vector<std::thread> participants;
  for (int p = 0; p < kParticipants; ++p) {
    participants.emplace_back([&, p] {
      TestClient client(NewChannel(target));
      client.set_wait_for_ready(true);
      for (int step = 0; step < kSteps; ++step) {
        v1::RoundResult result;
        const absl::Time give_up = absl::Now() + absl::Seconds(60);
        while (true) {
          grpc::Status status = client.Report(kRun, step, p, Partial(p, step),
                                              &result, absl::Seconds(2));
          if (status.ok()) break;
          // A trainer retries what a restart explains: the server gone
          // (UNAVAILABLE), a call cut off (CANCELLED, DEADLINE_EXCEEDED),
          // or a run not yet reloaded. Anything else is a failure.
          const auto code = status.error_code();
          ASSERT_TRUE(code == grpc::StatusCode::UNAVAILABLE ||
                      code == grpc::StatusCode::DEADLINE_EXCEEDED ||
                      code == grpc::StatusCode::CANCELLED ||
                      code == grpc::StatusCode::UNKNOWN)
              << "participant " << p << " step " << step << ": " << code << " "
              << status.error_message();
          ASSERT_LT(absl::Now(), give_up)
              << "step " << step << " never completed";
          ++retries;
          absl::SleepFor(absl::Milliseconds(20));
        }
        {
          absl::MutexLock lock(&mu);
          acknowledged[step][p] = result.SerializeAsString();
        }
        ++acknowledged_count;
        // A trainer's step takes time; without it the 300 steps could finish
        // between two kills on a fast machine.
        absl::SleepFor(absl::Milliseconds(5));
      }
      ++finished;
    });
  }

  // Kill at random moments until every participant is done; each coordinator
  // gets to acknowledge something before it dies, so the run makes progress.
  std::mt19937 rng(20240601);
  std::uniform_int_distribution<int> pause_ms(50, 250);
  int kills = 0;
  int acknowledged_before_kill = 0;
  while (finished.load() < kParticipants) {
    absl::SleepFor(absl::Milliseconds(pause_ms(rng)));
    if (finished.load() == kParticipants) break;
    if (acknowledged_count.load() == acknowledged_before_kill) continue;
    acknowledged_before_kill = acknowledged_count.load();
    coordinator.Kill();
    ++kills;
    coordinator.Start();
  }
  for (auto& t : participants) t.join();
  EXPECT_EQ(coordinator.Terminate(), 0)
      << "SIGTERM must exit 0 after flushing (-2: the last restart never "
         "listened)";
  EXPECT_GE(kills, 3) << "the coordinator was not killed often enough to test";
  std::printf("killed the coordinator %d times; %d reports retried\n", kills,
              retries.load());

  // Every participant got the same result for every step.
  for (int step = 0; step < kSteps; ++step) {
    for (int p = 1; p < kParticipants; ++p) {
      ASSERT_EQ(acknowledged[step][p], acknowledged[step][0])
          << "step " << step;
    }
  }

  // Every acknowledged round is stored, identical.
  SqliteStoreOptions store_options;
  store_options.path = db;
  auto store = SqliteTelemetryStore::Open(store_options);
  ASSERT_TRUE(store.ok()) << store.status();
  auto contents = (*store)->Load();
  ASSERT_TRUE(contents.ok()) << contents.status();
  std::map<uint64_t, const RoundRecord*> stored;
  for (const RoundRecord& round : contents->rounds) {
    if (round.result.run_id() == kRun) stored[round.result.step()] = &round;
  }
  ASSERT_EQ(stored.size(), static_cast<size_t>(kSteps));
  for (int step = 0; step < kSteps; ++step) {
    ASSERT_EQ(stored.count(step), 1u) << "step " << step;
    const RoundRecord& round = *stored[step];
    EXPECT_EQ(round.result.SerializeAsString(), acknowledged[step][0])
        << "step " << step;
    ASSERT_EQ(round.participants.size(), static_cast<size_t>(kParticipants));
    double sum = 0;
    for (int p = 0; p < kParticipants; ++p) {
      EXPECT_EQ(round.participants[p].partial, Partial(p, step));
      sum += Partial(p, step);
    }
    EXPECT_EQ(round.result.total_norm(), std::sqrt(sum)) << "step " << step;
  }
  store->reset();

  sqlite3* handle = nullptr;
  ASSERT_EQ(sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr),
            SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(handle, "PRAGMA integrity_check", -1, &stmt, nullptr),
      SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(
      std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))),
      "ok");
  sqlite3_finalize(stmt);
  sqlite3_close(handle);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
