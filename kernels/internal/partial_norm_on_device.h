// The partial norm left in device memory, for a reduction that stays on the
// GPU. Not public yet: nothing in the client uses it (GetGradNorm copies each
// partial to the host and reduces there); the CUDA benchmark measures it.
// Defined in kernels/partial_norm.cc, next to ComputePartialNorm, whose checks
// it shares.
#ifndef GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_ON_DEVICE_H_
#define GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_ON_DEVICE_H_

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm.h"

namespace gradnorm {

// For CUDA tensors: enqueues the partial on options.cuda_stream and leaves it
// in device memory at `device_result` (one fp64 value, e.g. for NCCL to reduce
// with no host round trip). Returns without synchronizing. With no tensors (a
// rank without gradients) it enqueues a write of 0. A non-finite input shows as
// a NaN/Inf value. Errors as above, plus INVALID_ARGUMENT for host tensors or a
// null device_result.
absl::Status ComputePartialNormOnDevice(absl::Span<const GradTensor> tensors,
                                        double p, double* device_result,
                                        const PartialNormOptions& options = {});

}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_ON_DEVICE_H_
