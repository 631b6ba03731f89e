// The fast path of the exact CPU partial (its plan, shared with the GPU, is in
// exact_tile.h): the exact sum of |x| or x^2 over a
// block of fp32, bf16 or fp16 elements with SIMD fp64 arithmetic that provably
// rounds nothing, for blocks whose exponents span a bounded range (gradients
// nearly always do).
//
//   ExactSum sum;
//   ExactBlockRun run{tensor_end};  // one per run of blocks through a tensor
//   if (!AddBlockExact(DType::kBFloat16, data, n, /*squares=*/true, &run,
//                      &sum)) {
//     ... sum the block another way (exponent bins) ...
//   }
//
// A first pass over the block (it stays in L1) finds the largest and the
// smallest nonzero magnitude, so the exponents E_hi and E_lo = E_hi - D. Every
// term (|x| or x^2, exact in fp64) is then a multiple of u = the smallest
// term's unit and below 2^w * u, w = k * (s + D) (k = 1 or 2, s the format's
// significand bits). With B = 2^b >= n:
//   - b + w <= 53: every partial sum is a multiple of u below 2^53 * u, so the
//     plain fp64 sums (any lanes, any order) are exact ("one level");
//   - 2b + w <= 105: each lane keeps S, starting at 2^K (2^K = 2 * B * the
//     largest term's bound), and L: S' = fl(S + t), q = S' - S, L += t - q.
//     S stays in [2^K, 2^(K+1)), so q is t rounded to a multiple of
//     U = ulp(S) and both subtractions are exact; L gathers residuals below
//     U / 2, multiples of u, whose sums stay below 2^53 * u. The block's sum is
//     sum(S - 2^K) + sum(L), both exact ("two levels");
//   - otherwise, when at most kMaxOutliers elements lie below the binades
//     the two-level bound admits under the largest (a gradient's few
//     near-zero values), those are zeroed in a copy of the block that is
//     summed as above, and added one by one;
//   - otherwise, or with a NaN or Inf in the block, it returns false.
//
// Checked sums (x86 with AVX-512 only). The bounds above need the block's
// range: one more pass over it. Where the processor can round an addition
// without raising the inexact flag (AVX-512's rounding with suppressed
// exceptions), a block is first summed with no range pass:
//   - in one level, where the terms are narrow enough that it mostly holds
//     (every case but fp32 squares). The lanes' sums are checked first, then
//     their total; when only the total rounds, the lanes' sums are added
//     one by one;
//   - else in two levels from the start 2^K of the last block of the run
//     that was planned, with S' = fl(S + t) rounded quietly.
// Every other operation raises the flag if it rounds. The sum is taken when
// no flag was raised and it is finite: then nothing was rounded but the S'
// steps, whose rounding the two levels keep exactly (q = S' - S and t - q
// are computed without rounding, so sum(q) + sum(t - q) = sum(t)). Otherwise
// the block is planned as above, which also renews the run's start.
//
// On x86 every block is summed with denormals honoured (DAZ and FTZ off,
// whatever the caller set: fp32 -> fp64 conversion must not make subnormals
// zero) and the flags cleared; the caller's floating-point status is
// restored afterwards.
//
// Thread-safety: thread-safe, but an ExactBlockRun serves one thread at a
// time.
#ifndef GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_
#define GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_

#include <cstdint>

#include "common/exact_sum.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace kernels_internal {

// B of the bounds above: a block's elements at most.
inline constexpr int kExactBlockBits = 11;
inline constexpr int64_t kExactBlockElements = int64_t{1} << kExactBlockBits;
// Elements of a too-wide block that may lie below its two-level range.
inline constexpr int kMaxOutliers = 32;

// A run of blocks through one tensor, in order. Each block prefetches the
// stream ahead of itself (kernels/internal/cpu_prefetch.h), up to the end of
// the tensor; the checked sums start from the two-level start 2^K of the
// last block of the run that was planned. Neither changes a result, only
// the work.
struct ExactBlockRun {
  const void* end = nullptr;  // the tensor's end; nullptr: no prefetching
  double start = 0.0;         // 0: no block planned yet
};

// Adds the exact sum of |x| (squares false) or x^2 (true) over the n <=
// kExactBlockElements elements at `data` (fp32, bf16 or fp16; fp64 is not
// handled) to `out` and returns true, or adds nothing and returns false when
// the block holds a NaN or an infinity, or more than kMaxOutliers elements
// below the binades it can sum in two levels. `run` (may be null: plan
// every block, prefetch nothing) is read and updated.
bool AddBlockExact(DType dtype, const void* data, int64_t n, bool squares,
                   ExactBlockRun* run, ExactSum* out);

// Whether this processor takes the checked sums (else every block is planned).
bool ExactBlockChecksAvailable();

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_
