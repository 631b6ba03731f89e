// Launch of a __global__ function that reports only its own error. Included
// only by .cu files.
//
//   return Launch(MyKernel, blocks, threads, stream, arg0, arg1);
#ifndef GRADNORM_KERNELS_INTERNAL_CUDA_LAUNCH_CUH_
#define GRADNORM_KERNELS_INTERNAL_CUDA_LAUNCH_CUH_

#include <cuda_runtime.h>

#include <utility>

namespace gradnorm {
namespace kernels_internal {

// Launches `kernel` and returns this launch's own error. A `<<<>>>` launch
// checked with cudaGetLastError would instead report any earlier failed
// runtime call of this thread that nobody cleared (the caller's, or an
// invalid cudaSetDevice or out-of-memory cudaMallocAsync of a previous call
// here) as the launch's failure.
template <typename... Params, typename... Args>
cudaError_t Launch(void (*kernel)(Params...), int blocks, int threads,
                   cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = 0;
  config.stream = stream;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_CUDA_LAUNCH_CUH_
