// NCCL communicator on the GPUs of this machine: one thread per GPU (up to 4),
// each a rank. Skips when there is no GPU. Tagged requires-gpu.
#include "client/nccl_communicator.h"

#include <cuda_runtime_api.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

int GpuCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) return 0;
  return std::min(count, 4);
}

class NcclCommunicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gpus_ = GpuCount();
    if (gpus_ == 0) GTEST_SKIP() << "no CUDA GPU on this machine";
    ASSERT_EQ(ncclGetUniqueId(&id_), ncclSuccess);
  }

  // Runs fn(comm) on one thread per GPU, each a rank of one communicator.
  template <typename Fn>
  void OnEveryRank(Fn fn) {
    std::vector<std::thread> threads;
    for (int r = 0; r < gpus_; ++r) {
      threads.emplace_back([&, r] {
        absl::StatusOr<std::unique_ptr<NcclCommunicator>> comm =
            NcclCommunicator::CreateFromUniqueId(id_, r, gpus_, r);
        ASSERT_TRUE(comm.ok()) << comm.status();
        fn(**comm);
      });
    }
    for (std::thread& t : threads) t.join();
  }

  int gpus_ = 0;
  ncclUniqueId id_;
};

TEST_F(NcclCommunicatorTest, HostSumMaxAndBroadcast) {
  OnEveryRank([&](NcclCommunicator& comm) {
    const int r = comm.rank();
    double sums[2] = {1.0 + r, 0.5};
    ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(sums), ReduceOp::kSum).ok());
    EXPECT_EQ(sums[0], gpus_ * (gpus_ + 1) / 2.0);
    EXPECT_EQ(sums[1], 0.5 * gpus_);
    double maxes[2] = {static_cast<double>(r),
                       r == gpus_ - 1
                           ? std::numeric_limits<double>::quiet_NaN()
                           : std::numeric_limits<double>::infinity()};
    ASSERT_TRUE(comm.AllReduce(absl::MakeSpan(maxes), ReduceOp::kMax).ok());
    EXPECT_EQ(maxes[0], gpus_ - 1.0);
    EXPECT_TRUE(std::isnan(maxes[1])) << "rank " << r << ": " << maxes[1];
    std::string bytes = r == 0 ? "from rank 0" : "";
    ASSERT_TRUE(comm.BroadcastBytes(&bytes, 0).ok());
    EXPECT_EQ(bytes, "from rank 0");
    EXPECT_TRUE(comm.Barrier().ok());
  });
}

}  // namespace
}  // namespace gradnorm
