// Partial gradient norms over many tensors in one pass, and in-place clipping.
//
// The local half of the norm: for a p-norm (0 < p < inf) the partial
// is S = sum over all elements of all tensors of |g|^p; for the inf-norm
// (p = +inf) it is M = max |g|. Every element is widened to fp64 before it is
// raised to p, so no finite fp32/bf16/fp16 value overflows or underflows. The
// result is bitwise identical for any thread count, GPU grid or launch split.
//
//   std::vector<GradTensor> grads = ...;
//   absl::StatusOr<PartialNorm> partial = ComputePartialNorm(grads, 2.0);
//   if (!partial.ok()) return partial.status();
//   double norm = std::sqrt(partial->value);
//   if (!partial->nonfinite && max_norm / (norm + 1e-6) < 1) {
//     RETURN_IF_ERROR(ScaleInPlace(grads, max_norm / (norm + 1e-6)));
//   }
//
// Thread-safety: the functions are thread-safe; concurrent calls must not
// scale the same memory.
#ifndef GRADNORM_KERNELS_PARTIAL_NORM_H_
#define GRADNORM_KERNELS_PARTIAL_NORM_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm_result.h"

namespace gradnorm {

// An executor for the CPU kernels' work items: runs fn(i) once for every i in
// [0, n), in any order, on any threads (the caller's included), and returns
// when all have finished. Work items are fixed before it is called and each
// writes its own result, so the executor never changes a result. Lets a host
// process run the kernels on its own worker threads (e.g. PyTorch's intra-op
// pool through at::parallel_for) instead of gradnorm's pool, so the two pools
// do not compete for cores. fn does not throw.
//
//   options.parallel_for = [](int64_t n,
//                             const std::function<void(int64_t)>& fn) {
//     at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
//       for (int64_t i = b; i < e; ++i) fn(i);
//     });
//   };
using ParallelFor =
    std::function<void(int64_t n, const std::function<void(int64_t)>& fn)>;

struct PartialNormOptions {
  // CPU worker threads; 0 means one per hardware thread. Does not change the
  // result. With parallel_for set, it only sizes the work items (about eight
  // per thread).
  int num_threads = 0;
  // CPU: runs the work items when set (and the input is large enough to split);
  // empty means gradnorm's own persistent thread pool. Does not change the
  // result.
  ParallelFor parallel_for;
  // Elements per work chunk. Chunks are combined in a fixed order, so the
  // result depends on this value but never on num_threads; 0 means the default.
  int64_t chunk_elements = 0;
  // Also return each tensor's own partial in PartialNorm::per_tensor.
  bool per_tensor = false;
  // For CUDA tensors: the cudaStream_t to run on (nullptr = the default
  // stream).
  void* cuda_stream = nullptr;
  // p = 1 or 2: sum the exact terms with no rounding (PartialNorm::exact), so
  // the partial is the same bits for any layout, thread count or chunking;
  // `value` is it rounded once. p = inf is exact anyway; other p:
  // INVALID_ARGUMENT. Host and CUDA tensors give the same bits.
  bool exact = false;
  // Accumulate in fp32 instead of fp64 (CPU, p = 1 or 2, 32- and 16-bit
  // tensors; CUDA always accumulates in fp64). Exists only to benchmark what
  // fp64 costs; results may overflow. Never the default.
  bool fp32_accumulation = false;
};

// The partial norm of `tensors` (all on one device). INVALID_ARGUMENT for a bad
// tensor (see ValidateTensors), p <= 0 or NaN, or negative num_threads /
// chunk_elements; FAILED_PRECONDITION for CUDA tensors in a build without CUDA
// or on a machine where CUDA cannot run (no device, old driver);
// RESOURCE_EXHAUSTED when the device workspace cannot be allocated; INTERNAL
// for any other CUDA error. CUDA error messages name the failing call.
//
// Host tensors: computed by the calling thread and a persistent worker pool, or
// by options.parallel_for when set.
// CUDA tensors: enqueued on options.cuda_stream of the tensors' device, then
// synchronized; the fp64 result equals the CPU's to about 1e-12 relative.
absl::StatusOr<PartialNorm> ComputePartialNorm(
    absl::Span<const GradTensor> tensors, double p,
    const PartialNormOptions& options = {});

struct ScaleOptions {
  int num_threads = 0;
  // As PartialNormOptions::parallel_for.
  ParallelFor parallel_for;
  void* cuda_stream = nullptr;
};

// Multiplies every element of every tensor by `coef` in place, in the tensor's
// own storage and dtype (bf16/fp16 round to nearest even), the product formed
// in fp32 (fp32/bf16/fp16, coef rounded to fp32) or fp64 (fp64 tensors, or a
// coef beyond the fp32 range); CPU and CUDA give identical bits.
// INVALID_ARGUMENT for a bad tensor, a coef that is negative or not finite, or
// negative num_threads; nothing is written then. CUDA tensors: enqueued on
// options.cuda_stream, returns without synchronizing; other errors as for
// ComputePartialNorm.
absl::Status ScaleInPlace(absl::Span<const GradTensor> tensors, double coef,
                          const ScaleOptions& options = {});

}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_PARTIAL_NORM_H_
