// __device__ building blocks of the CUDA kernels (the "block" layer of STYLE.md
// rule 11): widening loads of every gradient dtype, the per-element norm steps,
// and a fixed-order block reduction. Included only by .cu files.
#ifndef GRADNORM_KERNELS_INTERNAL_CUDA_DEVICE_CUH_
#define GRADNORM_KERNELS_INTERNAL_CUDA_DEVICE_CUH_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/norm_math.h"
#include "kernels/internal/half.h"
#include "kernels/internal/partial_norm_cuda_kernels.h"

namespace gradnorm {
namespace kernels_internal {
namespace device {

// Element type -> storage type of one element.
template <int8_t kDType>
struct Storage;
template <>
struct Storage<kCudaFloat32> {
  using T = float;
};
template <>
struct Storage<kCudaFloat64> {
  using T = double;
};
template <>
struct Storage<kCudaBFloat16> {
  using T = uint16_t;
};
template <>
struct Storage<kCudaFloat16> {
  using T = uint16_t;
};

template <int8_t kDType>
__device__ __forceinline__ float ToFloat(uint16_t bits) {
  if constexpr (kDType == kCudaBFloat16) {
    return __uint_as_float(static_cast<uint32_t>(bits) << 16);
  } else {
    return __half2float(__ushort_as_half(bits));
  }
}

template <int8_t kDType>
__device__ __forceinline__ double ToDouble(typename Storage<kDType>::T x) {
  if constexpr (kDType == kCudaFloat32 || kDType == kCudaFloat64) {
    return static_cast<double>(x);
  } else {
    return static_cast<double>(ToFloat<kDType>(x));
  }
}

template <CudaNormKind kKind>
__device__ __forceinline__ double Step(double acc, double x, double p) {
  if constexpr (kKind == CudaNormKind::kSumSquares) {
    return fma(x, x, acc);
  } else if constexpr (kKind == CudaNormKind::kSumAbs) {
    return acc + fabs(x);
  } else if constexpr (kKind == CudaNormKind::kSumPow) {
    return acc + pow(fabs(x), p);
  } else {
    return NanMax(acc, fabs(x));
  }
}

template <CudaNormKind kKind>
__device__ __forceinline__ double Combine(double a, double b) {
  if constexpr (kKind == CudaNormKind::kMaxAbs) {
    return isnan(a) ? a : NanMax(a, b);
  } else {
    return a + b;
  }
}

// Elements per 16-byte vector load.
template <typename T>
inline constexpr int kVec = 16 / sizeof(T);

// Block-wide reduction in a fixed tree order (warp shuffles, then one warp
// over the warp results). Every thread must call it; thread 0 gets the result.
template <CudaNormKind kKind>
__device__ __forceinline__ double BlockReduce(double v) {
  __shared__ double warp_values[32];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  for (int offset = 16; offset > 0; offset >>= 1) {
    v = Combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  if (lane == 0) warp_values[warp] = v;
  __syncthreads();
  const int num_warps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < num_warps ? warp_values[lane] : 0.0;
    for (int offset = 16; offset > 0; offset >>= 1) {
      v = Combine<kKind>(v, __shfl_down_sync(0xffffffffu, v, offset));
    }
  }
  __syncthreads();  // warp_values may be reused by a following call
  return v;
}

}  // namespace device
}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_CUDA_DEVICE_CUH_
