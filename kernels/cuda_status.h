// The one place a cudaError_t becomes an absl::Status, for the kernels and the
// client's NCCL communicator alike. The message names the failing call and
// CUDA's own name and text for the error.
//
//   RETURN_IF_CUDA_ERROR(cudaMallocAsync(&ptr, bytes, stream));
//   // -> INTERNAL "cudaMallocAsync(&ptr, bytes, stream) failed:
//   //    cudaErrorInvalidValue (invalid argument)"
//
// Codes: FAILED_PRECONDITION where the machine cannot run the kernels at all
// (no device, driver too old, bad device ordinal, a GPU older than sm_80 for
// which no kernel image was built); RESOURCE_EXHAUSTED for out of device
// memory; INTERNAL for everything else.
// Thread-safety: stateless.
#ifndef GRADNORM_KERNELS_CUDA_STATUS_H_
#define GRADNORM_KERNELS_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gradnorm {

absl::Status CudaErrorToStatus(cudaError_t error, absl::string_view call);

}  // namespace gradnorm

// Evaluates a CUDA runtime call; returns its translated error from the
// enclosing function if it is not cudaSuccess. The error, now a Status, is
// also cleared from the thread's last-error state (cudaGetLastError), so no
// later check (gradnorm's or the caller's) reports it again; a sticky error
// (a faulted context) stays, as it must.
#define RETURN_IF_CUDA_ERROR(call)                                       \
  do {                                                                   \
    const cudaError_t gradnorm_cuda_error_ = (call);                     \
    if (gradnorm_cuda_error_ != cudaSuccess) {                           \
      (void)cudaGetLastError();                                          \
      return ::gradnorm::CudaErrorToStatus(gradnorm_cuda_error_, #call); \
    }                                                                    \
  } while (false)

#endif  // GRADNORM_KERNELS_CUDA_STATUS_H_
