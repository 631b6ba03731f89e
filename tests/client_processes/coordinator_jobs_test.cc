// Jobs that share no communicator, combined by a real coordinator process:
// every rank is a real process (rank_main) and the coordinator is the real
// //server:coordinator binary on a free loopback port.
//
// Usage (Bazel passes them): coordinator_jobs_test <rank_main> <coordinator>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
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

std::string g_rank_main;    // NOLINT: set once in main.
std::string g_coordinator;  // NOLINT: set once in main.

std::string FreshDir(const std::string& name) {
  std::string dir = ::testing::TempDir() + "/" + name + "_XXXXXX";
  EXPECT_NE(mkdtemp(&dir[0]), nullptr);
  return dir;
}

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

// Starts the coordinator on 127.0.0.1:port with a SQLite store at `db` and
// waits until it accepts connections.
absl::StatusOr<std::unique_ptr<ChildProcess>> StartCoordinator(
    int port, const std::string& db) {
  absl::StatusOr<std::unique_ptr<ChildProcess>> p = ChildProcess::Start(
      {g_coordinator, absl::StrCat("--listen=127.0.0.1:", port),
       "--store=sqlite", absl::StrCat("--db=", db)},
      ChildOptions());
  if (!p.ok()) return p;
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  while (!Accepts(port)) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("coordinator did not start listening");
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return p;
}

struct RankOutcome {
  int exit_code = -1;
  std::map<std::string, std::string> out;
  double Double(const std::string& key) const {
    auto it = out.find(key);
    return it == out.end() ? std::nan("")
                           : std::strtod(it->second.c_str(), nullptr);
  }
};

std::string Describe(const RankOutcome& o) {
  std::string s = absl::StrCat("exit ", o.exit_code);
  for (const auto& [k, v] : o.out) absl::StrAppend(&s, "\n  ", k, " ", v);
  return s;
}

// The ranks of one job (DP = dp), running one clipper step against the run.
struct Job {
  std::string dir;
  std::vector<std::unique_ptr<ChildProcess>> ranks;
};

Job StartJob(int job, int jobs, int dp, int port, const std::string& run_id,
             double max_norm) {
  Job j;
  j.dir = FreshDir(absl::StrCat("job", job));
  for (int r = 0; r < dp; ++r) {
    absl::StatusOr<std::unique_ptr<ChildProcess>> p = ChildProcess::Start(
        {g_rank_main, absl::StrCat("--store=", j.dir),
         absl::StrCat("--rank=", r), absl::StrCat("--dp=", dp), "--tp=1",
         absl::StrCat("--job=", job), absl::StrCat("--jobs=", jobs),
         "--scenario=step", absl::StrCat("--coordinator=127.0.0.1:", port),
         absl::StrCat("--run_id=", run_id),
         absl::StrCat("--max_norm=", max_norm),
         absl::StrCat("--out=", j.dir, "/out.", r)},
        ChildOptions());
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) j.ranks.push_back(std::move(p).value());
  }
  return j;
}

std::vector<RankOutcome> Finish(Job& job, absl::Time deadline) {
  std::vector<RankOutcome> outcomes(job.ranks.size());
  for (size_t r = 0; r < job.ranks.size(); ++r) {
    absl::StatusOr<int> code = job.ranks[r]->Wait(deadline);
    EXPECT_TRUE(code.ok()) << "rank " << r << ": " << code.status();
    outcomes[r].exit_code = code.ok() ? *code : -1;
    auto kv = ReadKeyValues(absl::StrCat(job.dir, "/out.", r));
    if (kv.ok()) outcomes[r].out.insert(kv->begin(), kv->end());
  }
  return outcomes;
}

// 2 jobs x 2 ranks: both jobs get the same total and coefficient, the fp64
// norm over both jobs' gradients, and clip exactly by it.
TEST(CoordinatorJobsTest, TwoJobsGetTheNormOverBothAndClipByIt) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  absl::StatusOr<std::unique_ptr<ChildProcess>> coordinator =
      StartCoordinator(*port, FreshDir("db") + "/gradnorm.db");
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();

  constexpr double kMaxNorm = 0.5;
  std::vector<Job> jobs;
  for (int j = 0; j < 2; ++j) {
    jobs.push_back(StartJob(j, 2, /*dp=*/2, *port, "two-jobs", kMaxNorm));
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(45);
  const double total = FullNorm(2.0, /*with_bias=*/false);
  const double coef = kMaxNorm / (total + 1e-6);
  ASSERT_LT(coef, 1.0);
  std::string first_total;
  for (int j = 0; j < 2; ++j) {
    std::vector<RankOutcome> ranks = Finish(jobs[j], deadline);
    for (int r = 0; r < 2; ++r) {
      const RankOutcome& o = ranks[r];
      ASSERT_EQ(o.exit_code, 0)
          << "job " << j << " rank " << r << ": " << Describe(o);
      EXPECT_EQ(o.out.at("action"), "ACTION_CLIP");
      EXPECT_NEAR(o.Double("total"), total, 1e-12 * total);
      EXPECT_NEAR(o.Double("coef"), coef, 1e-12);
      if (first_total.empty()) first_total = o.out.at("total");
      EXPECT_EQ(o.out.at("total"), first_total) << "job " << j << " rank " << r;
      const std::vector<float> shard = WeightShard(2 * j + r, 4);
      const float applied = static_cast<float>(o.Double("coef"));
      for (size_t i = 0; i < shard.size(); ++i) {
        EXPECT_EQ(static_cast<float>(o.Double(absl::StrCat("w", i))),
                  shard[i] * applied)
            << "job " << j << " rank " << r << " w" << i;
      }
    }
  }
}

// Job 0 reports and waits; the coordinator is killed and restarted on the same
// port and database; job 1 reports to the new one. Job 0's client retries
// through the outage and both jobs get the round's result.
TEST(CoordinatorJobsTest, ClientRetriesThroughACoordinatorRestart) {
  absl::StatusOr<int> port = PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  const std::string db = FreshDir("db") + "/gradnorm.db";
  absl::StatusOr<std::unique_ptr<ChildProcess>> coordinator =
      StartCoordinator(*port, db);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();

  Job job0 = StartJob(0, 2, /*dp=*/1, *port, "restart", 100.0);
  absl::SleepFor(absl::Milliseconds(1500));  // job 0 is waiting for job 1
  (*coordinator)->Kill();
  absl::SleepFor(absl::Milliseconds(300));
  absl::StatusOr<std::unique_ptr<ChildProcess>> restarted =
      StartCoordinator(*port, db);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  Job job1 = StartJob(1, 2, /*dp=*/1, *port, "restart", 100.0);

  const absl::Time deadline = absl::Now() + absl::Seconds(45);
  std::vector<RankOutcome> first = Finish(job0, deadline);
  std::vector<RankOutcome> second = Finish(job1, deadline);
  ASSERT_EQ(first[0].exit_code, 0) << Describe(first[0]);
  ASSERT_EQ(second[0].exit_code, 0) << Describe(second[0]);
  const double total = FullNorm(2.0, false, /*shards=*/2);
  EXPECT_NEAR(first[0].Double("total"), total, 1e-12 * total);
  EXPECT_EQ(first[0].out.at("total"), second[0].out.at("total"));
  EXPECT_EQ(first[0].out.at("action"), "ACTION_NONE");
  EXPECT_GE(first[0].Double("retries"), 1) << Describe(first[0]);
}

}  // namespace
}  // namespace testing
}  // namespace gradnorm

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <rank_main> <coordinator>\n", argv[0]);
    return 2;
  }
  gradnorm::testing::g_rank_main = argv[1];
  gradnorm::testing::g_coordinator = argv[2];
  return RUN_ALL_TESTS();
}
