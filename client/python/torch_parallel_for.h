// A gradnorm::ParallelFor (kernels/partial_norm.h) on PyTorch's own intra-op
// threads, so that in a torch process the CPU kernels do not run on a second
// pool beside torch's: torch's OpenMP workers keep spinning for a while after
// every parallel torch op, and two pools on the same cores oversubscribe them.
//
//   PartialNormOptions options;
//   options.parallel_for = TorchParallelFor;
//   ComputePartialNorm(views, 2.0, options);  // GIL released
//
// One at::parallel_for over min(n, at::get_num_threads()) workers (the caller
// among them), each claiming work items from a shared counter. Inside a torch
// parallel region it runs every item on the calling thread.
//
// Thread-safety: call from any thread WITHOUT the Python GIL (fn runs on
// torch's threads); fn must not throw.
#ifndef GRADNORM_CLIENT_PYTHON_TORCH_PARALLEL_FOR_H_
#define GRADNORM_CLIENT_PYTHON_TORCH_PARALLEL_FOR_H_

#include <cstdint>
#include <functional>

namespace gradnorm {
namespace python_internal {

// Runs fn(i) once for every i in [0, n) and returns when all have finished.
void TorchParallelFor(int64_t n, const std::function<void(int64_t)>& fn);

}  // namespace python_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_PYTHON_TORCH_PARALLEL_FOR_H_
