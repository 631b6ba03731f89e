// The CUDA implementation behind ComputePartialNorm, ComputePartialNormOnDevice
// and ScaleInPlace for tensors in device memory: host dispatch (validate the
// CUDA side, pack tensors into launches, convert errors). No CUDA types here;
// the stream is the opaque handle of PartialNormOptions::cuda_stream.
//
// Callers have validated: tensors pass ValidateTensors, all on one cuda:N
// device; p > 0 or +inf; coef finite and >= 0.
//
// Work is enqueued on the given stream (nullptr: the default stream) of the
// tensors' device; the calling thread's current device is restored on return.
// Errors: FAILED_PRECONDITION where CUDA cannot run (no device, bad ordinal,
// old driver), RESOURCE_EXHAUSTED when workspace allocation fails, INTERNAL
// for other CUDA errors; the message names the failing CUDA call.
//
// Thread-safety: thread-safe; each call allocates its own stream-ordered
// workspace.
#ifndef GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_H_
#define GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm_result.h"

namespace gradnorm {
namespace kernels_internal {

struct CudaNormOptions {
  void* stream = nullptr;  // cudaStream_t
  bool per_tensor = false;
  // p = 1 or 2 (the caller checked): the exact partial (PartialNorm::exact),
  // bitwise the CPU's for the same elements.
  bool exact = false;
};

// Enqueues the partial norm and waits for it (a stream synchronize).
absl::StatusOr<PartialNorm> ComputePartialNormCuda(
    absl::Span<const GradTensor> tensors, double p,
    const CudaNormOptions& options);

// Enqueues the partial norm into *device_result (device memory) and returns
// without synchronizing. With no tensors it enqueues a write of 0.
absl::Status ComputePartialNormOnDeviceCuda(
    absl::Span<const GradTensor> tensors, double p, double* device_result,
    const CudaNormOptions& options);

// Enqueues x *= coef in place for every tensor; returns without synchronizing.
absl::Status ScaleInPlaceCuda(absl::Span<const GradTensor> tensors, double coef,
                              void* stream);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_H_
