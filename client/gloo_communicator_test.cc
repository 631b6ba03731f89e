// In-process checks of the Gloo communicator (one thread per rank, real TCP
// over loopback). The multi-process tests are in tests/client_processes/.
#include "client/gloo_communicator.h"

#include <stdlib.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

std::string FreshDir() {
  std::string tmpl = ::testing::TempDir() + "/gloo_XXXXXX";
  EXPECT_NE(mkdtemp(&tmpl[0]), nullptr);
  return tmpl;
}

GlooCommunicatorOptions Options(const std::string& dir, int rank, int size,
                                absl::Duration timeout = absl::Seconds(20)) {
  GlooCommunicatorOptions options;
  options.store_path = dir;
  options.group_name = "test";
  options.rank = rank;
  options.size = size;
  options.timeout = timeout;
  return options;
}

TEST(GlooCommunicatorTest, ReducesAndBroadcastsAcrossThreeRanks) {
  const std::string dir = FreshDir();
  constexpr int kSize = 3;
  std::vector<absl::Status> statuses(kSize);
  std::vector<std::vector<double>> sums(kSize), maxes(kSize), bcast(kSize);
  std::vector<std::string> bytes(kSize);
  std::vector<std::thread> threads;
  for (int r = 0; r < kSize; ++r) {
    threads.emplace_back([&, r] {
      absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
          GlooCommunicator::Create(Options(dir, r, kSize));
      if (!comm.ok()) {
        statuses[r] = comm.status();
        return;
      }
      sums[r] = {1.0 + r, 0.5};
      maxes[r] = {static_cast<double>(r),
                  r == 1 ? std::numeric_limits<double>::quiet_NaN()
                         : std::numeric_limits<double>::infinity()};
      bcast[r] = {10.0 * r, 1.0};
      bytes[r] = r == 2 ? std::string("result\0bytes", 12) : "ignored";
      absl::Status s =
          (*comm)->AllReduce(absl::MakeSpan(sums[r]), ReduceOp::kSum);
      if (s.ok())
        s = (*comm)->AllReduce(absl::MakeSpan(maxes[r]), ReduceOp::kMax);
      if (s.ok()) s = (*comm)->Broadcast(absl::MakeSpan(bcast[r]), 1);
      if (s.ok()) s = (*comm)->BroadcastBytes(&bytes[r], 2);
      if (s.ok()) s = (*comm)->Barrier();
      statuses[r] = s;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < kSize; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_EQ(sums[r], (std::vector<double>{6.0, 1.5}));
    EXPECT_EQ(maxes[r][0], 2.0);
    EXPECT_TRUE(std::isnan(maxes[r][1])) << "rank " << r << ": " << maxes[r][1];
    EXPECT_EQ(bcast[r], (std::vector<double>{10.0, 1.0}));
    EXPECT_EQ(bytes[r], std::string("result\0bytes", 12));
  }
}

TEST(GlooCommunicatorTest, SizeOneNeedsNoPeers) {
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(Options(FreshDir(), 0, 1));
  ASSERT_TRUE(comm.ok()) << comm.status();
  double v[1] = {4.0};
  EXPECT_TRUE((*comm)->AllReduce(absl::MakeSpan(v), ReduceOp::kMax).ok());
  EXPECT_EQ(v[0], 4.0);
}

TEST(GlooCommunicatorTest, MissingPeerFailsRendezvousWithinTimeout) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<GlooCommunicator>> comm =
      GlooCommunicator::Create(Options(FreshDir(), 0, 2, absl::Seconds(1)));
  const absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded)
      << comm.status();
  EXPECT_TRUE(absl::StrContains(
      comm.status().message(), "rendezvous of gloo group 'test' (rank 0 of 2)"))
      << comm.status();
  EXPECT_LT(took, absl::Seconds(10));
}

TEST(GlooCommunicatorTest, RejectsBadOptions) {
  EXPECT_EQ(GlooCommunicator::Create(Options(FreshDir(), 2, 2)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GlooCommunicator::Create(Options("/nonexistent/dir", 0, 2))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  GlooCommunicatorOptions no_name = Options(FreshDir(), 0, 2);
  no_name.group_name = "";
  EXPECT_EQ(GlooCommunicator::Create(no_name).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gradnorm
