// Kernel launchers of the exact partial (p = 1, 2) of CUDA tensors: the same
// sums as the CPU's exact kernel, to the bit (kernels/internal/exact_tile.h).
// Host dispatch (partial_norm_cuda.cc) packs tensors into TensorListArgs, as
// for the fp64 partial, and calls these.
//
// Block b sums chunk block_chunk[b] of tensor block_tensor[b]: each warp takes
// groups of 256 elements (8 per lane, strided by 32), plans the group's exact
// sum from its largest and smallest nonzero magnitude, and adds the group's
// one or two exact fp64 parts to the block's fixed-point digits in shared
// memory (integer atomics: the order does not matter). A group that no fp64
// sum can take exactly (too wide, or NaN/Inf) goes to integer bins by exponent.
// fp64 elements add their 106-bit squares to the digits one by one.
//
// Determinism: integer digits, so any grid, launch split or interleaving gives
// the same bits. No floating-point atomics.
#ifndef GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CUDA_KERNELS_H_
#define GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CUDA_KERNELS_H_

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/internal/exact_tile.h"
#include "kernels/internal/partial_norm_cuda_kernels.h"

namespace gradnorm {
namespace kernels_internal {

// A warp's group: 2^kExactGroupBits elements.
inline constexpr int kExactGroupBits = 8;
// Entries of one reduced exact sum (ExactSum::kReducibleSize): the digits,
// then a NaN count and an Inf count.
inline constexpr int kExactReducibleSize = kExactDigits + 2;

// k = 1 (sum |x|) or 2 (sum x^2). For every block b of `args`, writes the
// chunk's normalized digits (< 2^32) to chunk_digits[(first_chunk + b) *
// kExactDigits ...] and its flags (1: NaN, 2: Inf) to chunk_flags[...].
cudaError_t LaunchExactChunkPartials(const TensorListArgs& args, int k,
                                     uint32_t* chunk_digits,
                                     int32_t* chunk_flags, cudaStream_t stream);

// The chunks' sums as ExactSum::FromReduced takes them: with per_tensor,
// reducible[t * kExactReducibleSize ...] for each tensor t (its chunks
// first_chunk[t] .. first_chunk[t + 1] - 1), and the whole set's at
// reducible[num_tensors * kExactReducibleSize]; without, the whole set's at
// reducible[0].
cudaError_t LaunchExactFinalize(const uint32_t* chunk_digits,
                                const int32_t* chunk_flags,
                                const int64_t* first_chunk, int32_t num_tensors,
                                bool per_tensor, double* reducible,
                                cudaStream_t stream);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CUDA_KERNELS_H_
