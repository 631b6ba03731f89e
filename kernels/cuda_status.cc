#include "kernels/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace gradnorm {

absl::Status CudaErrorToStatus(cudaError_t error, absl::string_view call) {
  if (error == cudaSuccess) return absl::OkStatus();
  const std::string message =
      absl::StrCat(call, " failed: ", cudaGetErrorName(error), " (",
                   cudaGetErrorString(error), ")");
  switch (error) {
    // This machine cannot run gradnorm's kernels: no device, a bad ordinal, a
    // driver too old for the toolkit or the PTX, or a GPU older than the
    // architectures built (sm_80 and newer).
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
      return absl::FailedPreconditionError(message);
    case cudaErrorMemoryAllocation:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace gradnorm
