#include "client/c_api/internal/callback_communicator.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/c_api/gradnorm.h"
#include "client/c_api/internal/last_error.h"
#include "client/in_memory_communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace c_api_internal {
namespace {

using ::testing::HasSubstr;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Callbacks over an in-memory communicator, whose MAX is fmax: a transport
// that drops NaN, as some do.
struct Transport {
  Communicator* comm;
  int released = 0;
  int fail_next = 0;  // a gn_code to fail the next callback with

  gn_code Fail() {
    gn_code code = fail_next;
    fail_next = 0;
    SetCallbackMessage("peer 3 closed its connection");
    return code;
  }
};

gn_code AllReduce(void* user, double* values, size_t n, int32_t op) {
  auto* t = static_cast<Transport*>(user);
  if (t->fail_next != 0) return t->Fail();
  if (op == GN_REDUCE_SUM) {
    return static_cast<gn_code>(
        t->comm->AllReduce(absl::MakeSpan(values, n), ReduceOp::kSum).code());
  }
  // Gather every rank's values (a sum of disjoint slots), then fmax them.
  std::vector<double> slots(n * t->comm->size(), 0.0);
  for (size_t i = 0; i < n; ++i) slots[t->comm->rank() * n + i] = values[i];
  absl::Status s = t->comm->AllReduce(absl::MakeSpan(slots), ReduceOp::kSum);
  if (!s.ok()) return static_cast<gn_code>(s.code());
  for (size_t i = 0; i < n; ++i) {
    double m = -std::numeric_limits<double>::infinity();
    for (int r = 0; r < t->comm->size(); ++r)
      m = std::fmax(m, slots[r * n + i]);
    values[i] = m;
  }
  return GN_OK;
}

gn_code Broadcast(void* user, double* values, size_t n, int32_t root) {
  auto* t = static_cast<Transport*>(user);
  if (t->fail_next != 0) return t->Fail();
  return static_cast<gn_code>(
      t->comm->Broadcast(absl::MakeSpan(values, n), root).code());
}

gn_code BroadcastBytes(void* user, uint8_t* bytes, size_t n, int32_t root) {
  auto* t = static_cast<Transport*>(user);
  std::string s(reinterpret_cast<char*>(bytes), n);
  absl::Status status = t->comm->BroadcastBytes(&s, root);
  if (!status.ok()) return static_cast<gn_code>(status.code());
  if (s.size() != n) return GN_INTERNAL;
  std::copy(s.begin(), s.end(), bytes);
  return GN_OK;
}

gn_code Barrier(void* user) {
  return static_cast<gn_code>(
      static_cast<Transport*>(user)->comm->Barrier().code());
}

void Release(void* user) { static_cast<Transport*>(user)->released++; }

gn_communicator_callbacks Callbacks(Transport* t) {
  gn_communicator_callbacks c = {};
  c.user_data = t;
  c.rank = t->comm->rank();
  c.size = t->comm->size();
  c.all_reduce = AllReduce;
  c.broadcast = Broadcast;
  c.broadcast_bytes = BroadcastBytes;
  c.barrier = Barrier;
  c.release = Release;
  return c;
}

// Runs fn(rank, communicator) on each rank of a group of `size`.
template <typename Fn>
void OnGroup(int size, Fn fn) {
  auto group = *CreateInMemoryGroup(size, absl::Seconds(20));
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] {
      Transport t{group[r].get()};
      auto comm = CallbackCommunicator::Create(Callbacks(&t));
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, **comm);
    });
  }
  for (std::thread& t : threads) t.join();
}

TEST(CallbackCommunicatorTest, MaxKeepsNaNOverATransportThatDropsIt) {
  OnGroup(3, [](int rank, Communicator& comm) {
    double values[3] = {
        rank == 1 ? kNaN : 1.0 * rank, 2.0 + rank,
        rank == 2 ? std::numeric_limits<double>::infinity() : 0.5};
    ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(values), ReduceOp::kMax).ok());
    EXPECT_TRUE(std::isnan(values[0]));
    EXPECT_EQ(values[1], 4.0);
    EXPECT_TRUE(std::isinf(values[2]));
  });
}

TEST(CallbackCommunicatorTest, SumBroadcastAndBytes) {
  OnGroup(2, [](int rank, Communicator& comm) {
    double sum[2] = {1.0 + rank, 0.25};
    ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(sum), ReduceOp::kSum).ok());
    EXPECT_EQ(sum[0], 3.0);
    EXPECT_EQ(sum[1], 0.5);
    double b[1] = {rank == 1 ? 7.0 : 0.0};
    ASSERT_TRUE(comm.Broadcast(absl::MakeSpan(b), 1).ok());
    EXPECT_EQ(b[0], 7.0);
    // The other ranks' lengths differ: the root's length travels first.
    std::string bytes = rank == 0 ? std::string("outcome\0bytes", 13) : "x";
    ASSERT_TRUE(comm.BroadcastBytes(&bytes, 0).ok());
    EXPECT_EQ(bytes, std::string("outcome\0bytes", 13));
    std::string empty = rank == 0 ? "" : "stale";
    ASSERT_TRUE(comm.BroadcastBytes(&empty, 0).ok());
    EXPECT_EQ(empty, "");
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

TEST(CallbackCommunicatorTest, FailedCallbackIsFirstErrorThenPrecondition) {
  auto group = *CreateInMemoryGroup(1, absl::Seconds(5));
  Transport t{group[0].get()};
  {
    auto comm = *CallbackCommunicator::Create(Callbacks(&t));
    t.fail_next = GN_UNAVAILABLE;
    double v[1] = {1.0};
    absl::Status first = comm->AllReduce(absl::MakeSpan(v), ReduceOp::kSum);
    EXPECT_EQ(first.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(first.message(),
              "all_reduce callback failed: peer 3 closed its connection");
    absl::Status later = comm->Broadcast(absl::MakeSpan(v), 0);
    EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(later.message(), HasSubstr("peer 3 closed its connection"));
  }
  EXPECT_EQ(t.released, 1);
}

TEST(CallbackCommunicatorTest, CodeOutsideTheEnumIsUnknown) {
  auto group = *CreateInMemoryGroup(1, absl::Seconds(5));
  Transport t{group[0].get()};
  auto comm = *CallbackCommunicator::Create(Callbacks(&t));
  t.fail_next = 99;
  double v[1] = {1.0};
  absl::Status status = comm->Broadcast(absl::MakeSpan(v), 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnknown);
  EXPECT_THAT(status.message(), HasSubstr("returned code 99"));
}

TEST(CallbackCommunicatorTest, CreateChecksCallbacksAndRanks) {
  auto group = *CreateInMemoryGroup(1, absl::Seconds(5));
  Transport t{group[0].get()};
  gn_communicator_callbacks c = Callbacks(&t);
  c.barrier = nullptr;
  EXPECT_EQ(CallbackCommunicator::Create(c).status().code(),
            absl::StatusCode::kInvalidArgument);
  c = Callbacks(&t);
  c.rank = 2;
  c.size = 2;
  EXPECT_EQ(CallbackCommunicator::Create(c).status().message(),
            "communicator rank 2 of size 2; expected size >= 1 and 0 <= rank "
            "< size");
  c = Callbacks(&t);
  auto comm = *CallbackCommunicator::Create(c);
  double v[1] = {0};
  EXPECT_EQ(comm->Broadcast(absl::MakeSpan(v), 1).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace c_api_internal
}  // namespace gradnorm
