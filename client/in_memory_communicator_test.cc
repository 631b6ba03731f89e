#include "client/in_memory_communicator.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::vector<std::unique_ptr<Communicator>> Group(int size,
                                                 absl::Duration timeout) {
  absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> comms =
      CreateInMemoryGroup(size, timeout);
  EXPECT_TRUE(comms.ok()) << comms.status();
  return std::move(comms).value();
}

// Runs fn(rank) on one thread per rank and returns each rank's status.
template <typename Fn>
std::vector<absl::Status> OnEveryRank(int size, Fn fn) {
  std::vector<absl::Status> statuses(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] { statuses[r] = fn(r); });
  }
  for (std::thread& t : threads) t.join();
  return statuses;
}

TEST(InMemoryCommunicatorTest, SumAndMaxAcrossFourRanks) {
  auto comms = Group(4, absl::Seconds(10));
  std::vector<std::vector<double>> values(4);
  auto statuses = OnEveryRank(4, [&](int r) {
    values[r] = {static_cast<double>(r + 1), static_cast<double>(10 * r)};
    absl::Status s =
        comms[r]->AllReduce(absl::MakeSpan(values[r]), ReduceOp::kSum);
    if (!s.ok()) return s;
    values[r].push_back(r == 2 ? 100.0 : -1.0);
    return comms[r]->AllReduce(absl::MakeSpan(values[r]).subspan(2),
                               ReduceOp::kMax);
  });
  for (int r = 0; r < 4; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_EQ(values[r], (std::vector<double>{10.0, 60.0, 100.0}));
  }
}

TEST(InMemoryCommunicatorTest, MaxPropagatesNaNFromAnyRank) {
  auto comms = Group(3, absl::Seconds(10));
  std::vector<double> values(3);
  auto statuses = OnEveryRank(3, [&](int r) {
    values[r] = r == 1 ? kNaN : std::numeric_limits<double>::infinity();
    return comms[r]->AllReduce(absl::MakeSpan(&values[r], 1), ReduceOp::kMax);
  });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_TRUE(std::isnan(values[r])) << "rank " << r << ": " << values[r];
  }
}

TEST(InMemoryCommunicatorTest, BroadcastsValuesAndBytesFromRoot) {
  auto comms = Group(3, absl::Seconds(10));
  std::vector<double> values(3);
  std::vector<std::string> bytes(3);
  auto statuses = OnEveryRank(3, [&](int r) {
    values[r] = r;
    bytes[r] = r == 2 ? "from two" : "";
    absl::Status s = comms[r]->Broadcast(absl::MakeSpan(&values[r], 1), 1);
    if (!s.ok()) return s;
    s = comms[r]->BroadcastBytes(&bytes[r], 2);
    if (!s.ok()) return s;
    return comms[r]->Barrier();
  });
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(statuses[r].ok()) << statuses[r];
    EXPECT_EQ(values[r], 1.0);
    EXPECT_EQ(bytes[r], "from two");
  }
}

TEST(InMemoryCommunicatorTest, MissingRankTimesOutAndBreaksTheCommunicator) {
  auto comms = Group(2, absl::Milliseconds(100));
  double value = 1;
  absl::Status status =
      comms[0]->AllReduce(absl::MakeSpan(&value, 1), ReduceOp::kSum);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(status.message(),
            "in-memory collective #0 (all-reduce sum of 1 values): only 1 of 2 "
            "ranks joined within 100ms");
  status = comms[0]->Barrier();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(status.message(),
                               "communicator unusable after an earlier error"))
      << status;
}

TEST(InMemoryCommunicatorTest, MismatchedCallsAreInvalidArgument) {
  auto comms = Group(2, absl::Seconds(10));
  auto statuses = OnEveryRank(2, [&](int r) {
    std::vector<double> values(r + 1, 1.0);
    return comms[r]->AllReduce(absl::MakeSpan(values), ReduceOp::kSum);
  });
  EXPECT_EQ(statuses[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(statuses[0].message(),
            "ranks called different collectives: rank 0 called all-reduce sum "
            "of 1 values, rank 1 called all-reduce sum of 2 values");
}

TEST(InMemoryCommunicatorTest, RejectsBadArguments) {
  EXPECT_EQ(CreateInMemoryGroup(0, absl::Seconds(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CreateInMemoryGroup(2, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto comms = Group(2, absl::Seconds(1));
  double value = 0;
  EXPECT_EQ(comms[0]->Broadcast(absl::MakeSpan(&value, 1), 2).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gradnorm
