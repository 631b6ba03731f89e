// The CPU implementation behind ComputePartialNorm / ScaleInPlace for host
// tensors: Google Highway SIMD with runtime dispatch (AVX-512, AVX2, SSE4 or
// the portable scalar fallback, whichever the CPU supports best), fp64
// accumulation, worker threads over fixed-size chunks.
//
// Determinism: every tensor is cut into chunks of `chunk_elements` elements at
// fixed offsets; each chunk is reduced on its own (by whichever thread), and
// the chunk results are combined sequentially in tensor order. The result
// therefore depends on the data, p, chunk_elements and the SIMD target, never
// on the number of threads or how chunks were scheduled.
//
// Callers validate first: tensors pass ValidateTensors and are on the CPU, p is
// > 0 (or +inf), num_threads >= 0, chunk_elements >= 0, coef finite and >= 0.
//
// Thread-safety: thread-safe; concurrent calls share one persistent thread pool
// (or run on the caller's executor, CpuNormOptions::parallel_for).
#ifndef GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CPU_H_
#define GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CPU_H_

#include <cstdint>
#include <functional>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm_result.h"

namespace gradnorm {
namespace kernels_internal {

// Elements per chunk when PartialNormOptions::chunk_elements is 0.
inline constexpr int64_t kDefaultChunkElements = int64_t{1} << 16;

// The same type as gradnorm::ParallelFor (partial_norm.h), which this internal
// header cannot include.
using CpuParallelFor =
    std::function<void(int64_t n, const std::function<void(int64_t)>& fn)>;

struct CpuNormOptions {
  int num_threads = 0;  // 0: one per hardware thread
  // Runs the tasks when non-null and non-empty; else the default ThreadPool.
  const CpuParallelFor* parallel_for = nullptr;
  int64_t chunk_elements = 0;  // 0: kDefaultChunkElements
  bool per_tensor = false;
  bool fp32_accumulation = false;  // for 32- and 16-bit inputs, p = 1 or 2
};

PartialNorm ComputePartialNormCpu(absl::Span<const GradTensor> tensors,
                                  double p, const CpuNormOptions& options);

// Below this many elements one thread is faster than waking others.
inline constexpr int64_t kSerialElements = int64_t{1} << 15;

// The threads for `total_elements` of work: 1 below kSerialElements, else
// `requested` (0: one per hardware thread).
int Parallelism(int requested, int64_t total_elements);

// Runs fn over [0, num_tasks): on the caller's executor when one is given and
// there is more than one thread's work, else on the default pool (which runs a
// single thread's work inline). Tasks write their own results, so who runs
// them never matters.
void RunTasks(int64_t num_tasks, int parallelism,
              const CpuParallelFor* parallel_for,
              absl::FunctionRef<void(int64_t)> fn);

// num_threads 0: one per hardware thread. `parallel_for` as in CpuNormOptions.
void ScaleInPlaceCpu(absl::Span<const GradTensor> tensors, double coef,
                     int num_threads,
                     const CpuParallelFor* parallel_for = nullptr);

// What the kernels compute for a chunk; exposed for the per-target tests.
enum class NormKind : int32_t {
  kSumAbs = 0,      // p == 1
  kSumSquares = 1,  // p == 2
  kSumPow = 2,      // other finite p: std::pow per element
  kMaxAbs = 3,      // p == +inf
};

// A run of consecutive chunks, in tensor order, starting at chunk `chunk` of
// tensors[tensor]; its results go to slots first_slot .. first_slot+count-1.
// Zero-size tensors own no chunks and are skipped.
struct TaskSpan {
  size_t tensor;
  int64_t chunk;
  size_t first_slot;
  size_t count;
};

// Part of one tensor (at most 64 Ki elements), scaled as a unit.
struct ScalePiece {
  void* data;
  int64_t numel;
  DType dtype;
};

struct ReduceSpec {
  NormKind kind;
  double p;
  bool fp32_accumulation;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_INTERNAL_PARTIAL_NORM_CPU_H_
