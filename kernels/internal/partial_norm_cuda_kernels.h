// Kernel launchers for the CUDA partial norm and scale (the `.cu` layer of
// STYLE.md rule 11). Host dispatch (partial_norm_cuda.cc) packs tensors into
// TensorListArgs and calls these; they only enqueue work on `stream` and return
// the launch's cudaError_t.
//
// Multi-tensor apply: a launch covers up to kMaxTensorsPerLaunch tensors and
// kMaxBlocksPerLaunch blocks; block b reduces (or scales) chunk block_chunk[b]
// (kChunkElements elements) of tensor block_tensor[b]. Addresses and the chunk
// map travel in the kernel's argument struct, so a launch needs no copies.
//
// Determinism: a block's element-to-thread assignment and its reduction tree
// depend only on the chunk, never on alignment, grid or launch split; partials
// land in one workspace slot per chunk and a second kernel combines them in a
// fixed order. No floating-point atomics.
#ifndef GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_KERNELS_H_
#define GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gradnorm {
namespace kernels_internal {

inline constexpr int kCudaThreadsPerBlock = 512;
inline constexpr int64_t kCudaChunkElements = int64_t{1} << 16;
// Sized so TensorListArgs stays under the classic 4 KiB kernel-argument limit.
inline constexpr int kMaxTensorsPerLaunch = 96;
inline constexpr int kMaxBlocksPerLaunch = 448;
inline constexpr int kCudaFinalizeThreads = 1024;

// Values of GradTensor's DType, as the kernels see them.
enum CudaDType : int8_t {
  kCudaFloat32 = 0,
  kCudaBFloat16 = 1,
  kCudaFloat16 = 2,
  kCudaFloat64 = 3,
};

enum class CudaNormKind : int32_t {
  kSumAbs = 0,      // p == 1
  kSumSquares = 1,  // p == 2
  kSumPow = 2,      // other finite p
  kMaxAbs = 3,      // p == +inf
};

struct TensorListArgs {
  const void* data[kMaxTensorsPerLaunch];
  int64_t numel[kMaxTensorsPerLaunch];
  int8_t dtype[kMaxTensorsPerLaunch];
  uint8_t block_tensor[kMaxBlocksPerLaunch];
  int32_t block_chunk[kMaxBlocksPerLaunch];
  int32_t num_blocks;
  // Workspace slot of block 0's chunk.
  int64_t first_chunk;
};
static_assert(sizeof(TensorListArgs) + 64 <= 4096,
              "kernel arguments must fit in 4 KiB");

// Per-chunk partials: chunk_values[first_chunk + b] and chunk_flags[...] (1 if
// the chunk held NaN or Inf) for every block b of `args`.
cudaError_t LaunchChunkPartials(const TensorListArgs& args, CudaNormKind kind,
                                double p, double* chunk_values,
                                int32_t* chunk_flags, cudaStream_t stream);

// One block: per_tensor[t] = the chunks first_chunk[t] .. first_chunk[t+1]-1
// combined in order; *result = per_tensor combined in a fixed tree order;
// *result_flag = any chunk flag. per_tensor must hold num_tensors values.
cudaError_t LaunchFinalize(const double* chunk_values,
                           const int32_t* chunk_flags,
                           const int64_t* first_chunk, int32_t num_tensors,
                           CudaNormKind kind, double* per_tensor,
                           double* result, int32_t* result_flag,
                           cudaStream_t stream);

// In place: x *= coef for every element of every block's chunk; the product
// in fp32 with coef32 (fp32/bf16/fp16, rounded to nearest even) or in fp64
// (fp64 tensors, and all tensors when use_fp64_product).
cudaError_t LaunchScale(const TensorListArgs& args, float coef32, double coef64,
                        bool use_fp64_product, cudaStream_t stream);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CUDA_KERNELS_H_
