// The exact partial norm of host tensors for p = 1 (sum |g|) and p = 2 (sum
// g^2): every term is formed exactly and summed with no rounding
// (common/exact_sum.h), so the result is the same bits for any thread count,
// chunking, sharding or order of the tensors.
//
// 32- and 16-bit elements go in batches of blocks of 2048 to AddBlocksExact
// (exact_block_cpu.h): SIMD fp64 sums that round nothing, checked by the
// floating-point flags on AVX-512 and otherwise planned from the block's
// range (up to 17 binades for fp32 squares, 33 for bf16, all of fp16's).
// A block it leaves (wider, or with a NaN or Inf) is
// split into integer significands and exponents; the significands (squared for
// p = 2: at most 48 bits) are summed as integers in one bin per exponent. fp64
// elements go to the exact sum one by one (a square is 106 bits wide).
//
// Thread-safety: thread-safe; runs on the default ThreadPool or on
// options.parallel_for as ComputePartialNormCpu does.
#ifndef GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CPU_H_
#define GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CPU_H_

#include <vector>

#include "absl/types/span.h"
#include "common/exact_sum.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/partial_norm_cpu.h"

namespace gradnorm {
namespace kernels_internal {

struct ExactPartial {
  ExactSum total;
  // One per tensor, in input order, when options.per_tensor.
  std::vector<ExactSum> per_tensor;
};

// p is 1 or 2; tensors are valid host tensors. chunk_elements and
// fp32_accumulation of `options` do not apply (nothing is rounded).
ExactPartial ComputeExactPartialCpu(absl::Span<const GradTensor> tensors,
                                    double p, const CpuNormOptions& options);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_EXACT_PARTIAL_CPU_H_
