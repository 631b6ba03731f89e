// __global__ kernels and their launchers. Layout and determinism rules: see
// partial_norm_cuda_kernels.h.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <utility>

#include "kernels/internal/cuda_device.cuh"
#include "kernels/internal/cuda_launch.cuh"
#include "kernels/internal/half.h"
#include "kernels/internal/partial_norm_cuda_kernels.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

using device::BlockReduce;
using device::Combine;
using device::kVec;
using device::Step;
using device::Storage;
using device::ToDouble;

// 16-byte loads each thread issues before using any (memory-level parallelism).
constexpr int kUnroll = 4;

// Thread t takes the vectors t, t + blockDim, t + 2 blockDim, ... of the chunk,
// and within a vector its elements in order, whether the vector is loaded in
// one 16-byte load (aligned) or element by element (unaligned base, or the
// chunk's ragged end). So the sum's rounding never depends on the address.
template <int8_t kDType, CudaNormKind kKind>
__device__ void ReduceChunk(const void* base, int64_t n, double p, double* out,
                            int32_t* flag) {
  using T = typename Storage<kDType>::T;
  constexpr int kV = kVec<T>;
  const T* data = static_cast<const T*>(base);
  const bool aligned = (reinterpret_cast<uintptr_t>(data) % 16) == 0;
  double acc = 0.0;
  bool bad = false;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kV;
  int64_t v = static_cast<int64_t>(threadIdx.x) * kV;
  auto accumulate = [&](const T* items) {
#pragma unroll
    for (int j = 0; j < kV; ++j) {
      const double x = ToDouble<kDType>(items[j]);
      bad |= !isfinite(x);
      acc = Step<kKind>(acc, x, p);
    }
  };
  if (aligned) {
    // kUnroll loads in flight per thread before any arithmetic; the thread
    // still visits its vectors in the same ascending order.
    for (; v + (kUnroll - 1) * stride + kV <= n; v += kUnroll * stride) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        raw[u] = __ldg(reinterpret_cast<const uint4*>(data + v + u * stride));
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        alignas(16) T items[kV];
        memcpy(items, &raw[u], sizeof(items));
        accumulate(items);
      }
    }
  }
  for (; v < n; v += stride) {
    alignas(16) T items[kV];
    if (aligned && v + kV <= n) {
      *reinterpret_cast<uint4*>(items) =
          __ldg(reinterpret_cast<const uint4*>(data + v));
      accumulate(items);
    } else {
      for (int j = 0; j < kV && v + j < n; ++j) {
        const double x = ToDouble<kDType>(data[v + j]);
        bad |= !isfinite(x);
        acc = Step<kKind>(acc, x, p);
      }
    }
  }
  const double total = BlockReduce<kKind>(acc);
  const int any_bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) {
    *out = total;
    *flag = any_bad;
  }
}

template <int8_t kDType>
__device__ void ReduceChunkKind(CudaNormKind kind, const void* base, int64_t n,
                                double p, double* out, int32_t* flag) {
  switch (kind) {
    case CudaNormKind::kSumAbs:
      ReduceChunk<kDType, CudaNormKind::kSumAbs>(base, n, p, out, flag);
      break;
    case CudaNormKind::kSumSquares:
      ReduceChunk<kDType, CudaNormKind::kSumSquares>(base, n, p, out, flag);
      break;
    case CudaNormKind::kSumPow:
      ReduceChunk<kDType, CudaNormKind::kSumPow>(base, n, p, out, flag);
      break;
    case CudaNormKind::kMaxAbs:
      ReduceChunk<kDType, CudaNormKind::kMaxAbs>(base, n, p, out, flag);
      break;
  }
}

__global__ void __launch_bounds__(kCudaThreadsPerBlock)
    ChunkPartialsKernel(const TensorListArgs args, CudaNormKind kind, double p,
                        double* chunk_values, int32_t* chunk_flags) {
  const int b = blockIdx.x;
  const int t = args.block_tensor[b];
  const int64_t start =
      static_cast<int64_t>(args.block_chunk[b]) * kCudaChunkElements;
  const int64_t left = args.numel[t] - start;
  const int64_t n = left < kCudaChunkElements ? left : kCudaChunkElements;
  const int64_t slot = args.first_chunk + b;
  double* out = chunk_values + slot;
  int32_t* flag = chunk_flags + slot;
  switch (args.dtype[t]) {
    case kCudaFloat32:
      ReduceChunkKind<kCudaFloat32>(
          kind, static_cast<const float*>(args.data[t]) + start, n, p, out,
          flag);
      break;
    case kCudaFloat64:
      ReduceChunkKind<kCudaFloat64>(
          kind, static_cast<const double*>(args.data[t]) + start, n, p, out,
          flag);
      break;
    case kCudaBFloat16:
      ReduceChunkKind<kCudaBFloat16>(
          kind, static_cast<const uint16_t*>(args.data[t]) + start, n, p, out,
          flag);
      break;
    case kCudaFloat16:
      ReduceChunkKind<kCudaFloat16>(
          kind, static_cast<const uint16_t*>(args.data[t]) + start, n, p, out,
          flag);
      break;
  }
}

template <CudaNormKind kKind>
__device__ void Finalize(const double* chunk_values, const int32_t* chunk_flags,
                         const int64_t* first_chunk, int32_t num_tensors,
                         double* per_tensor, double* result,
                         int32_t* result_flag) {
  bool bad = false;
  for (int32_t t = threadIdx.x; t < num_tensors; t += blockDim.x) {
    double v = 0.0;
    for (int64_t c = first_chunk[t]; c < first_chunk[t + 1]; ++c) {
      v = Combine<kKind>(v, chunk_values[c]);
      bad |= chunk_flags[c] != 0;
    }
    per_tensor[t] = v;
  }
  __syncthreads();
  double acc = 0.0;
  for (int32_t t = threadIdx.x; t < num_tensors; t += blockDim.x) {
    acc = Combine<kKind>(acc, per_tensor[t]);
  }
  const double total = BlockReduce<kKind>(acc);
  const int any_bad = __syncthreads_or(bad);
  if (threadIdx.x == 0) {
    *result = total;
    *result_flag = any_bad;
  }
}

__global__ void __launch_bounds__(kCudaFinalizeThreads)
    FinalizeKernel(const double* chunk_values, const int32_t* chunk_flags,
                   const int64_t* first_chunk, int32_t num_tensors,
                   CudaNormKind kind, double* per_tensor, double* result,
                   int32_t* result_flag) {
  if (kind == CudaNormKind::kMaxAbs) {
    Finalize<CudaNormKind::kMaxAbs>(chunk_values, chunk_flags, first_chunk,
                                    num_tensors, per_tensor, result,
                                    result_flag);
  } else {
    Finalize<CudaNormKind::kSumSquares>(chunk_values, chunk_flags, first_chunk,
                                        num_tensors, per_tensor, result,
                                        result_flag);
  }
}

template <int8_t kDType>
__device__ __forceinline__ typename Storage<kDType>::T ScaleOne(
    typename Storage<kDType>::T x, float coef32, double coef64, bool fp64) {
  if constexpr (kDType == kCudaFloat64) {
    return x * coef64;
  } else if constexpr (kDType == kCudaFloat32) {
    return fp64 ? static_cast<float>(static_cast<double>(x) * coef64)
                : x * coef32;
  } else {
    const float f = device::ToFloat<kDType>(x);
    const float prod =
        fp64 ? static_cast<float>(static_cast<double>(f) * coef64) : f * coef32;
    // half.h's narrowing, as on the CPU: the same bits by construction
    // (cvt.rn.f16.f32 agrees on finite values but has its own NaN pattern).
    if constexpr (kDType == kCudaBFloat16) {
      return half_internal::FloatToBFloat16Bits(prod);
    } else {
      return half_internal::FloatToHalfBits(prod);
    }
  }
}

template <int8_t kDType>
__device__ void ScaleChunk(void* base, int64_t n, float coef32, double coef64,
                           bool fp64) {
  using T = typename Storage<kDType>::T;
  constexpr int kV = kVec<T>;
  T* data = static_cast<T*>(base);
  const bool aligned = (reinterpret_cast<uintptr_t>(data) % 16) == 0;
  const int64_t stride = static_cast<int64_t>(blockDim.x) * kV;
  int64_t v = static_cast<int64_t>(threadIdx.x) * kV;
  if (aligned) {
    for (; v + (kUnroll - 1) * stride + kV <= n; v += kUnroll * stride) {
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        raw[u] = *reinterpret_cast<const uint4*>(data + v + u * stride);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        alignas(16) T items[kV];
        memcpy(items, &raw[u], sizeof(items));
#pragma unroll
        for (int j = 0; j < kV; ++j) {
          items[j] = ScaleOne<kDType>(items[j], coef32, coef64, fp64);
        }
        *reinterpret_cast<uint4*>(data + v + u * stride) =
            *reinterpret_cast<const uint4*>(items);
      }
    }
  }
  for (; v < n; v += stride) {
    if (aligned && v + kV <= n) {
      alignas(16) T items[kV];
      *reinterpret_cast<uint4*>(items) =
          *reinterpret_cast<const uint4*>(data + v);
#pragma unroll
      for (int j = 0; j < kV; ++j) {
        items[j] = ScaleOne<kDType>(items[j], coef32, coef64, fp64);
      }
      *reinterpret_cast<uint4*>(data + v) =
          *reinterpret_cast<const uint4*>(items);
    } else {
      for (int j = 0; j < kV && v + j < n; ++j) {
        data[v + j] = ScaleOne<kDType>(data[v + j], coef32, coef64, fp64);
      }
    }
  }
}

__global__ void __launch_bounds__(kCudaThreadsPerBlock)
    ScaleKernel(const TensorListArgs args, float coef32, double coef64,
                bool fp64) {
  const int b = blockIdx.x;
  const int t = args.block_tensor[b];
  const int64_t start =
      static_cast<int64_t>(args.block_chunk[b]) * kCudaChunkElements;
  const int64_t left = args.numel[t] - start;
  const int64_t n = left < kCudaChunkElements ? left : kCudaChunkElements;
  void* base = const_cast<void*>(args.data[t]);
  switch (args.dtype[t]) {
    case kCudaFloat32:
      ScaleChunk<kCudaFloat32>(static_cast<float*>(base) + start, n, coef32,
                               coef64, fp64);
      break;
    case kCudaFloat64:
      ScaleChunk<kCudaFloat64>(static_cast<double*>(base) + start, n, coef32,
                               coef64, fp64);
      break;
    case kCudaBFloat16:
      ScaleChunk<kCudaBFloat16>(static_cast<uint16_t*>(base) + start, n, coef32,
                                coef64, fp64);
      break;
    case kCudaFloat16:
      ScaleChunk<kCudaFloat16>(static_cast<uint16_t*>(base) + start, n, coef32,
                               coef64, fp64);
      break;
  }
}

}  // namespace

cudaError_t LaunchChunkPartials(const TensorListArgs& args, CudaNormKind kind,
                                double p, double* chunk_values,
                                int32_t* chunk_flags, cudaStream_t stream) {
  if (args.num_blocks == 0) return cudaSuccess;
  return Launch(ChunkPartialsKernel, args.num_blocks, kCudaThreadsPerBlock,
                stream, args, kind, p, chunk_values, chunk_flags);
}

cudaError_t LaunchFinalize(const double* chunk_values,
                           const int32_t* chunk_flags,
                           const int64_t* first_chunk, int32_t num_tensors,
                           CudaNormKind kind, double* per_tensor,
                           double* result, int32_t* result_flag,
                           cudaStream_t stream) {
  return Launch(FinalizeKernel, 1, kCudaFinalizeThreads, stream, chunk_values,
                chunk_flags, first_chunk, num_tensors, kind, per_tensor, result,
                result_flag);
}

cudaError_t LaunchScale(const TensorListArgs& args, float coef32, double coef64,
                        bool use_fp64_product, cudaStream_t stream) {
  if (args.num_blocks == 0) return cudaSuccess;
  return Launch(ScaleKernel, args.num_blocks, kCudaThreadsPerBlock, stream,
                args, coef32, coef64, use_fp64_product);
}

}  // namespace kernels_internal
}  // namespace gradnorm
