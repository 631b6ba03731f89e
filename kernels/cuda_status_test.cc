// CudaErrorToStatus is pure host code: these run on any machine with the CUDA
// toolkit, with or without a GPU.
#include "kernels/cuda_status.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace {

TEST(CudaStatusTest, SuccessIsOk) {
  EXPECT_TRUE(CudaErrorToStatus(cudaSuccess, "cudaMalloc(&p, 8)").ok());
}

TEST(CudaStatusTest, MessageNamesTheCallAndTheError) {
  const absl::Status s = CudaErrorToStatus(cudaErrorInvalidValue,
                                           "cudaMemcpyAsync(a, b, n, k, s)");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(s.message(),
            "cudaMemcpyAsync(a, b, n, k, s) failed: cudaErrorInvalidValue "
            "(invalid argument)");
}

TEST(CudaStatusTest, MachinesThatCannotRunTheKernelsAreFailedPrecondition) {
  // A GPU older than sm_80 has no kernel image in this build; that is the
  // machine's limit, not an internal error.
  for (cudaError_t e :
       {cudaErrorNoDevice, cudaErrorInsufficientDriver, cudaErrorInvalidDevice,
        cudaErrorNoKernelImageForDevice, cudaErrorUnsupportedPtxVersion}) {
    EXPECT_EQ(CudaErrorToStatus(e, "LaunchScale(args)").code(),
              absl::StatusCode::kFailedPrecondition)
        << cudaGetErrorName(e);
  }
}

TEST(CudaStatusTest, OutOfMemoryIsResourceExhausted) {
  EXPECT_EQ(
      CudaErrorToStatus(cudaErrorMemoryAllocation, "cudaMallocAsync").code(),
      absl::StatusCode::kResourceExhausted);
}

TEST(CudaStatusTest, KernelFaultsAreInternal) {
  EXPECT_EQ(CudaErrorToStatus(cudaErrorIllegalAddress,
                              "cudaStreamSynchronize(stream)")
                .code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace gradnorm
