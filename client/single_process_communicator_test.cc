#include "client/single_process_communicator.h"

#include <string>

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(SingleProcessCommunicatorTest, CollectivesAreTheIdentity) {
  SingleProcessCommunicator comm;
  EXPECT_EQ(comm.rank(), 0);
  EXPECT_EQ(comm.size(), 1);
  double values[2] = {3.5, -1.0};
  ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(values), ReduceOp::kSum).ok());
  ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(values), ReduceOp::kMax).ok());
  ASSERT_TRUE(comm.Broadcast(absl::MakeSpan(values), 0).ok());
  EXPECT_EQ(values[0], 3.5);
  EXPECT_EQ(values[1], -1.0);
  std::string bytes = "payload";
  ASSERT_TRUE(comm.BroadcastBytes(&bytes, 0).ok());
  EXPECT_EQ(bytes, "payload");
  EXPECT_TRUE(comm.Barrier().ok());
}

TEST(SingleProcessCommunicatorTest, RootOutOfRangeIsInvalidArgument) {
  SingleProcessCommunicator comm;
  double value = 1;
  absl::Status status = comm.Broadcast(absl::MakeSpan(&value, 1), 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "broadcast root 1 is out of range: expected 0 in a group of 1");
}

}  // namespace
}  // namespace gradnorm
