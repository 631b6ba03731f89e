// The __global__ passes of the device bandwidth probe
// (device_bandwidth_probe.h): a plain read and an in-place add over a buffer of
// 16-byte words, as fast as the GPU's memory allows.
#ifndef GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_KERNELS_H_
#define GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstddef>

namespace gradnorm {
namespace kernels_internal {

inline constexpr int kProbeThreadsPerBlock = 512;
// Resident blocks per SM the kernels are compiled for (at most 32 registers a
// thread), and launched with: 2048 threads, every SM's maximum.
inline constexpr int kProbeBlocksPerSm = 4;

// Reads the `words` 16-byte words at `data` (16-byte aligned) as float4 and
// sums them; block b writes its sum to block_sums[b] (`blocks` floats), so no
// load can be optimized away.
cudaError_t LaunchReadProbe(const void* data, size_t words, int blocks,
                            float* block_sums, cudaStream_t stream);

// Adds 1 to every float of the `words` 16-byte words at `data`, in place.
cudaError_t LaunchReadWriteProbe(void* data, size_t words, int blocks,
                                 cudaStream_t stream);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_KERNELS_H_
