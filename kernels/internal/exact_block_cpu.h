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
// exceptions), blocks are first summed with no range pass:
//   - in one level, where the terms are narrow enough that it mostly holds
//     (every case but fp32 squares);
//   - else in two levels from the start 2^K of the last block of the run
//     that was planned, with S' = fl(S + t) rounded quietly.
// Every other operation raises the flag if it rounds. A sum is taken when
// no flag was raised and it is finite: then nothing was rounded but the S'
// steps, whose rounding the two levels keep exactly (q = S' - S and t - q
// are computed without rounding, so sum(q) + sum(t - q) = sum(t)).
//
// Reading the flags waits for all the arithmetic before it, so they are read
// once per batch of up to kExactBatchBlocks blocks (AddBlocksExact). In one
// level, the lanes' sums of the batch's blocks are split around a power of
// two C (hi = fl(a + C) - C, rounded quietly, and lo = a - hi) and the his
// and the los are summed apart: both sums are far narrower than a total of
// the lanes, so they hold wherever the lanes' sums did. In two levels the
// batch is summed in one go. When anything in a batch rounded, its blocks
// are taken one by one: checked (one level: the lanes' sums, then their
// total, then, if only the total rounded, the lanes' sums added one by one;
// else two levels), and planned as above when that rounds too, which also
// renews the run's start. Checked sums that fail for most of a batch pause
// for 1, 2, 4 ... up to 64 batches of the run (blocks spanning 40 binades
// would otherwise pay for failed tries before every plan).
//
// Every block is summed with denormals honoured (float_status.h: fp32 ->
// fp64 conversion must not make subnormals zero, whatever the caller set),
// and the caller's floating-point status is restored afterwards.
//
// Thread-safety: thread-safe, but an ExactBlockRun serves one thread at a
// time.
#ifndef GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_
#define GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_

#include <algorithm>
#include <cstdint>

#include "common/exact_sum.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/float_status.h"

namespace gradnorm {
namespace kernels_internal {

// B of the bounds above: a block's elements at most.
inline constexpr int kExactBlockBits = 11;
inline constexpr int64_t kExactBlockElements = int64_t{1} << kExactBlockBits;
// Blocks that AddBlocksExact takes at once, at most.
inline constexpr int kExactBatchBlocks = 4;
inline constexpr int64_t kExactBatchElements =
    kExactBatchBlocks * kExactBlockElements;
// Elements of a too-wide block that may lie below its two-level range.
inline constexpr int kMaxOutliers = 32;

// A run of blocks through one tensor, in order, by one thread. Each block
// prefetches the stream ahead of itself (kernels/internal/cpu_prefetch.h), up
// to the end of the tensor; the checked sums start from the two-level start
// 2^K of the last block of the run that was planned. Neither changes a
// result, only the work. The run also holds the floating-point status its
// blocks are summed in (float_status.h), set once for all of them: the
// caller's status is back when the run ends. So a run is made and used by
// one thread, and nothing else may change that thread's floating-point
// status while the run lives.
class ExactBlockRun {
 public:
  // `end`: the tensor's end; nullptr: no prefetching.
  explicit ExactBlockRun(const void* end = nullptr) : end_(end) {}

  const void* end() const { return end_; }
  double start() const { return start_; }  // 0: no block planned yet
  void set_start(double start) { start_ = start; }
  FloatStatusScope& status() { return status_; }

  // Whether the checked sums are paused for this batch (counts it).
  bool ChecksPaused() {
    if (pause_ == 0) return false;
    --pause_;
    return true;
  }
  // The checked sums failed for most of a batch: pause them for twice as
  // many batches as last time, at most `longest`.
  void ChecksFailed(int longest) {
    backoff_ = backoff_ == 0 ? 1 : std::min(2 * backoff_, longest);
    pause_ = backoff_;
  }
  void ChecksHeld() { backoff_ = 0; }
  bool ChecksFailing() const { return backoff_ != 0; }

  // The blocks the checked sums took (for tests and benchmarks).
  int64_t checked_blocks() const { return checked_blocks_; }
  void CountChecked(int64_t blocks) { checked_blocks_ += blocks; }

 private:
  const void* end_;
  double start_ = 0.0;
  int pause_ = 0;
  int backoff_ = 0;
  int64_t checked_blocks_ = 0;
  FloatStatusScope status_;
};

// Adds the exact sum of |x| (squares false) or x^2 (true) over the n <=
// kExactBlockElements elements at `data` (fp32, bf16 or fp16; fp64 is not
// handled) to `out` and returns true, or adds nothing and returns false when
// the block holds a NaN or an infinity, or more than kMaxOutliers elements
// below the binades it can sum in two levels. `run` (may be null: plan
// every block, prefetch nothing) is read and updated.
bool AddBlockExact(DType dtype, const void* data, int64_t n, bool squares,
                   ExactBlockRun* run, ExactSum* out);

// The same for the consecutive blocks of kExactBlockElements (the last may
// be shorter) in n <= kExactBatchElements elements, in one go: the checked
// sums read the flags once for a batch that holds. Returns the blocks left
// (nothing added for them) as a mask: bit b for block b.
uint32_t AddBlocksExact(DType dtype, const void* data, int64_t n, bool squares,
                        ExactBlockRun* run, ExactSum* out);

// Whether this processor takes the checked sums (else every block is planned).
bool ExactBlockChecksAvailable();

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_EXACT_BLOCK_CPU_H_
