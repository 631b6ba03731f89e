#include <cuda_runtime.h>

#include "kernels/benchmark/device_bandwidth_probe_kernels.h"
#include "kernels/internal/cuda_launch.cuh"

namespace gradnorm {
namespace kernels_internal {
namespace {

constexpr int kUnroll = 4;  // independent 16-byte loads in flight per thread

__device__ float Lanes(float4 v) { return (v.x + v.y) + (v.z + v.w); }

__global__ void __launch_bounds__(kProbeThreadsPerBlock, kProbeBlocksPerSm)
    ReadProbeKernel(const float4* __restrict__ data, size_t words,
                    float* __restrict__ block_sums) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  float acc = 0.0f;
  for (; i + (kUnroll - 1) * stride < words; i += kUnroll * stride) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldg(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc += Lanes(v[u]);
  }
  for (; i < words; i += stride) acc += Lanes(__ldg(data + i));

  // Warp sums, then the first warp sums the warps'.
  for (int offset = 16; offset > 0; offset /= 2) {
    acc += __shfl_down_sync(0xffffffffu, acc, offset);
  }
  __shared__ float warp_sums[kProbeThreadsPerBlock / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    acc = threadIdx.x < blockDim.x / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset /= 2) {
      acc += __shfl_down_sync(0xffffffffu, acc, offset);
    }
    if (threadIdx.x == 0) block_sums[blockIdx.x] = acc;
  }
}

__global__ void __launch_bounds__(kProbeThreadsPerBlock, kProbeBlocksPerSm)
    ReadWriteProbeKernel(float4* __restrict__ data, size_t words) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < words; i += kUnroll * stride) {
    float4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = data[i + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      data[i + u * stride] = make_float4(v[u].x + 1.0f, v[u].y + 1.0f,
                                         v[u].z + 1.0f, v[u].w + 1.0f);
    }
  }
  for (; i < words; i += stride) {
    const float4 v = data[i];
    data[i] = make_float4(v.x + 1.0f, v.y + 1.0f, v.z + 1.0f, v.w + 1.0f);
  }
}

}  // namespace

cudaError_t LaunchReadProbe(const void* data, size_t words, int blocks,
                            float* block_sums, cudaStream_t stream) {
  return Launch(ReadProbeKernel, blocks, kProbeThreadsPerBlock, stream,
                static_cast<const float4*>(data), words, block_sums);
}

cudaError_t LaunchReadWriteProbe(void* data, size_t words, int blocks,
                                 cudaStream_t stream) {
  return Launch(ReadWriteProbeKernel, blocks, kProbeThreadsPerBlock, stream,
                static_cast<float4*>(data), words);
}

}  // namespace kernels_internal
}  // namespace gradnorm
