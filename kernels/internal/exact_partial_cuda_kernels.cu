// __global__ kernels of the exact partial and their launchers; see
// exact_partial_cuda_kernels.h.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/internal/cuda_launch.cuh"
#include "kernels/internal/exact_partial_cuda_kernels.h"
#include "kernels/internal/exact_tile.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

// Whole warps only: every lane takes part in each __shfl_xor_sync.
static_assert(kCudaThreadsPerBlock % 32 == 0, "a block must be whole warps");
// A chunk's bins take at most 2^16 terms (fp32 squares below 2^48 each) and
// must not overflow their uint64 sums (exact_tile.h, BinTerm).
static_assert(kCudaChunkElements <= (int64_t{1} << 16),
              "a larger chunk would overflow the bins");
constexpr int kWarps = kCudaThreadsPerBlock / 32;
constexpr int kGroup = 1 << kExactGroupBits;
constexpr int kPerLane = kGroup / 32;
constexpr unsigned kFullWarp = 0xffffffffu;

struct ChunkSums {
  unsigned long long digits[kExactDigits];
  unsigned long long bins[256];
  int flags;  // 1: NaN, 2: Inf
};

// Adds to the block's digits (integer atomics: any order, same bits).
struct SharedAdd {
  ChunkSums* sums;
  __device__ void operator()(int digit, uint64_t v) const {
    atomicAdd(&sums->digits[digit], static_cast<unsigned long long>(v));
  }
};

template <int8_t kDType>
__device__ constexpr ExactFormat FormatOf() {
  if constexpr (kDType == kCudaFloat32) {
    return kExactFp32;
  } else if constexpr (kDType == kCudaBFloat16) {
    return kExactBf16;
  } else {
    return kExactFp16;
  }
}

template <int8_t kDType>
__device__ __forceinline__ uint32_t LoadBits(const void* data, int64_t i) {
  if constexpr (kDType == kCudaFloat32) {
    return __ldg(static_cast<const uint32_t*>(data) + i);
  } else {
    return __ldg(static_cast<const unsigned short*>(data) + i);
  }
}

template <int8_t kDType>
__device__ __forceinline__ double BitsToDouble(uint32_t bits) {
  if constexpr (kDType == kCudaFloat32) {
    return __uint_as_float(bits);
  } else if constexpr (kDType == kCudaBFloat16) {
    return __uint_as_float(bits << 16);
  } else {
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  }
}

__device__ __forceinline__ uint32_t WarpMax(uint32_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = max(v, __shfl_xor_sync(kFullWarp, v, offset));
  }
  return v;
}

__device__ __forceinline__ uint32_t WarpMin(uint32_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v = min(v, __shfl_xor_sync(kFullWarp, v, offset));
  }
  return v;
}

// Exact by the plan's bounds, whatever the order of the additions.
__device__ __forceinline__ double WarpSum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    v += __shfl_xor_sync(kFullWarp, v, offset);
  }
  return v;
}

// The chunk's 16- and 32-bit elements, a group of 256 per warp at a time.
template <int8_t kDType, int kK>
__device__ void SumGroups(const void* data, int64_t n, ChunkSums& sums) {
  constexpr ExactFormat f = FormatOf<kDType>();
  const uint32_t fraction_mask = (uint32_t{1} << (f.significand_bits - 1)) - 1;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const SharedAdd add{&sums};
  for (int64_t group = static_cast<int64_t>(warp) * kGroup; group < n;
       group += static_cast<int64_t>(kWarps) * kGroup) {
    uint32_t bits[kPerLane];
    uint32_t largest = 0;
    uint32_t smallest_minus_one = 0xffffffffu;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int64_t i = group + j * 32 + lane;
      bits[j] = i < n ? LoadBits<kDType>(data, i) : 0u;  // 0 adds nothing
      const uint32_t a = bits[j] & f.abs_mask;
      largest = max(largest, a);
      smallest_minus_one = min(smallest_minus_one, a - 1u);  // 0 wraps
    }
    largest = WarpMax(largest);
    smallest_minus_one = WarpMin(smallest_minus_one);
    const ExactPlan plan =
        PlanExactSum(f, kK, kExactGroupBits, largest, smallest_minus_one + 1u);
    if (plan.tier == ExactTier::kZero) continue;
    if (plan.tier == ExactTier::kBins) {
#pragma unroll
      for (int j = 0; j < kPerLane; ++j) {
        const uint32_t a = bits[j] & f.abs_mask;
        if (a >= f.infinity) {
          atomicOr(&sums.flags, (a & fraction_mask) != 0 ? 1 : 2);
          continue;
        }
        int bin;
        uint64_t term;
        BinTerm(f, kK, bits[j], &bin, &term);
        if (term != 0) {
          atomicAdd(&sums.bins[bin], static_cast<unsigned long long>(term));
        }
      }
      continue;
    }
    double values[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      values[j] = BitsToDouble<kDType>(bits[j]);
    double high, low;
    LaneSums<kK>(values, kPerLane, plan, &high, &low);
    high = WarpSum(high);
    low = WarpSum(low);
    if (lane == 0) {
      if (plan.tier == ExactTier::kTwoLevels) {
        MakeNonNegative(plan.unit, &high, &low);
      }
      AddDoubleToDigits(high, add);
      AddDoubleToDigits(low, add);
    }
  }
}

// fp64 elements: each term (a square is 106 bits) straight into the digits.
template <int kK>
__device__ void SumFp64(const double* data, int64_t n, ChunkSums& sums) {
  const SharedAdd add{&sums};
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const uint64_t bits =
        static_cast<uint64_t>(__double_as_longlong(__ldg(data + i)));
    const int e = static_cast<int>(bits >> 52) & 0x7ff;
    const uint64_t fraction = bits & ((uint64_t{1} << 52) - 1);
    if (e == 0x7ff) {
      atomicOr(&sums.flags, fraction != 0 ? 1 : 2);
      continue;
    }
    const uint64_t m = e != 0 ? fraction | (uint64_t{1} << 52) : fraction;
    const int exponent = (e != 0 ? e : 1) - 1075;
    if (kK == 1) {
      AddScaledToDigits(m, exponent, add);
    } else {
      AddScaledToDigits(m * m, 2 * exponent, add);
      AddScaledToDigits(__umul64hi(m, m), 2 * exponent + 64, add);
    }
  }
}

template <int kK>
__global__ void ExactChunkKernel(TensorListArgs args, uint32_t* chunk_digits,
                                 int32_t* chunk_flags) {
  __shared__ ChunkSums sums;
  for (int i = threadIdx.x; i < kExactDigits; i += blockDim.x) {
    sums.digits[i] = 0;
  }
  for (int i = threadIdx.x; i < 256; i += blockDim.x) sums.bins[i] = 0;
  if (threadIdx.x == 0) sums.flags = 0;
  __syncthreads();
  const int b = blockIdx.x;
  const int t = args.block_tensor[b];
  const int64_t begin =
      static_cast<int64_t>(args.block_chunk[b]) * kCudaChunkElements;
  const int64_t n = min(args.numel[t] - begin, kCudaChunkElements);
  const char* base = static_cast<const char*>(args.data[t]);
  const int8_t dtype = args.dtype[t];
  ExactFormat format = kExactFp32;
  switch (dtype) {
    case kCudaFloat32:
      SumGroups<kCudaFloat32, kK>(base + begin * 4, n, sums);
      break;
    case kCudaBFloat16:
      format = kExactBf16;
      SumGroups<kCudaBFloat16, kK>(base + begin * 2, n, sums);
      break;
    case kCudaFloat16:
      format = kExactFp16;
      SumGroups<kCudaFloat16, kK>(base + begin * 2, n, sums);
      break;
    case kCudaFloat64:
      SumFp64<kK>(reinterpret_cast<const double*>(base) + begin, n, sums);
      break;
  }
  __syncthreads();
  const SharedAdd add{&sums};
  for (int bin = threadIdx.x; bin < 256; bin += blockDim.x) {
    if (sums.bins[bin] != 0) {
      AddBinToDigits(format, kK, bin, sums.bins[bin], add);
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    NormalizeDigits(reinterpret_cast<uint64_t*>(sums.digits));
  }
  __syncthreads();
  const int64_t slot = args.first_chunk + b;
  for (int i = threadIdx.x; i < kExactDigits; i += blockDim.x) {
    chunk_digits[slot * kExactDigits + i] =
        static_cast<uint32_t>(sums.digits[i]);
  }
  if (threadIdx.x == 0) chunk_flags[slot] = sums.flags;
}

// Block g adds the digits of its chunks (tensor g's, or every chunk in the
// last block) column by column, then carries once.
__global__ void ExactFinalizeKernel(const uint32_t* chunk_digits,
                                    const int32_t* chunk_flags,
                                    const int64_t* first_chunk,
                                    int32_t num_tensors, double* reducible) {
  __shared__ unsigned long long sums[kExactDigits];
  __shared__ int nan_count;
  __shared__ int inf_count;
  const int g = blockIdx.x;
  const bool whole = g == static_cast<int>(gridDim.x) - 1;
  const int64_t first = whole ? 0 : first_chunk[g];
  const int64_t last = whole ? first_chunk[num_tensors] : first_chunk[g + 1];
  if (threadIdx.x == 0) {
    nan_count = 0;
    inf_count = 0;
  }
  __syncthreads();
  for (int d = threadIdx.x; d < kExactDigits; d += blockDim.x) {
    unsigned long long s = 0;  // < 2^32 per chunk: no overflow below 2^32
    for (int64_t c = first; c < last; ++c)
      s += chunk_digits[c * kExactDigits + d];
    sums[d] = s;
  }
  for (int64_t c = first + threadIdx.x; c < last; c += blockDim.x) {
    const int32_t flags = chunk_flags[c];
    if (flags & 1) atomicAdd(&nan_count, 1);
    if (flags & 2) atomicAdd(&inf_count, 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) NormalizeDigits(reinterpret_cast<uint64_t*>(sums));
  __syncthreads();
  double* out = reducible + static_cast<int64_t>(g) * kExactReducibleSize;
  for (int d = threadIdx.x; d < kExactDigits; d += blockDim.x) {
    out[d] = static_cast<double>(sums[d]);
  }
  if (threadIdx.x == 0) {
    out[kExactDigits] = nan_count;
    out[kExactDigits + 1] = inf_count;
  }
}

}  // namespace

cudaError_t LaunchExactChunkPartials(const TensorListArgs& args, int k,
                                     uint32_t* chunk_digits,
                                     int32_t* chunk_flags,
                                     cudaStream_t stream) {
  if (k == 1) {
    return Launch(ExactChunkKernel<1>, args.num_blocks, kCudaThreadsPerBlock,
                  stream, args, chunk_digits, chunk_flags);
  }
  return Launch(ExactChunkKernel<2>, args.num_blocks, kCudaThreadsPerBlock,
                stream, args, chunk_digits, chunk_flags);
}

cudaError_t LaunchExactFinalize(const uint32_t* chunk_digits,
                                const int32_t* chunk_flags,
                                const int64_t* first_chunk, int32_t num_tensors,
                                bool per_tensor, double* reducible,
                                cudaStream_t stream) {
  const int blocks = per_tensor ? num_tensors + 1 : 1;
  return Launch(ExactFinalizeKernel, blocks, 256, stream, chunk_digits,
                chunk_flags, first_chunk, num_tensors, reducible);
}

}  // namespace kernels_internal
}  // namespace gradnorm
