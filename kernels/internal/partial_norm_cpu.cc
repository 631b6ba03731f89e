// The CPU partial norm and in-place scaling: the tensors are cut into chunks
// and tasks, the tasks run on threads (cpu_tasks.h), and the chunks' values
// are combined in a fixed order.
#include "kernels/internal/partial_norm_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "absl/functional/function_ref.h"
#include "common/norm_math.h"
#include "kernels/internal/cpu_tasks.h"
#include "kernels/internal/half.h"
#include "kernels/internal/thread_pool.h"

namespace gradnorm {
namespace kernels_internal {

namespace {

// Elements handed to a thread at a time: about eight tasks per thread for
// balance, within bounds that amortize claiming a task (an atomic increment on
// a shared line) and restarting the hardware prefetcher on a new region. Task
// boundaries never change results: every chunk writes its own slot.
constexpr int64_t kMinTaskElements = int64_t{1} << 16;
constexpr int64_t kMaxTaskElements = int64_t{1} << 20;

int64_t TaskElements(int64_t total_elements, int parallelism) {
  return std::clamp<int64_t>(total_elements / (int64_t{8} * parallelism),
                             kMinTaskElements, kMaxTaskElements);
}
// Elements per scaling work item (scaling has no combine step to keep fixed).
constexpr int64_t kScaleElements = int64_t{1} << 16;

struct Scratch {
  std::vector<size_t> first_chunk;
  std::vector<TaskSpan> tasks;
  std::vector<double> chunk_value;
};

// Re-scan of a chunk whose sum came out non-finite: were there NaN/Inf inputs,
// or did large finite inputs overflow the accumulator (fp64 gradients, large p,
// fp32 accumulation)?
bool AnyNonFinite(const GradTensor& g, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    switch (g.dtype) {
      case DType::kFloat32:
        if (!std::isfinite(static_cast<const float*>(g.data)[i])) return true;
        break;
      case DType::kFloat64:
        if (!std::isfinite(static_cast<const double*>(g.data)[i])) return true;
        break;
      case DType::kBFloat16:
        if ((static_cast<const uint16_t*>(g.data)[i] & 0x7fff) >= 0x7f80) {
          return true;
        }
        break;
      case DType::kFloat16:
        if ((static_cast<const uint16_t*>(g.data)[i] & 0x7fff) >= 0x7c00) {
          return true;
        }
        break;
    }
  }
  return false;
}

NormKind KindFor(double p) {
  if (p == 1.0) return NormKind::kSumAbs;
  if (p == 2.0) return NormKind::kSumSquares;
  if (std::isinf(p)) return NormKind::kMaxAbs;
  return NormKind::kSumPow;
}

}  // namespace

int Parallelism(int requested, int64_t total_elements) {
  if (total_elements < kSerialElements) return 1;
  return requested > 0 ? requested : ThreadPool::HardwareThreads();
}

void RunTasks(int64_t num_tasks, int parallelism,
              const CpuParallelFor* parallel_for,
              absl::FunctionRef<void(int64_t)> fn) {
  if (parallel_for != nullptr && *parallel_for && parallelism > 1 &&
      num_tasks > 1) {
    (*parallel_for)(num_tasks, std::function<void(int64_t)>(fn));
    return;
  }
  ThreadPool::Default().ParallelFor(num_tasks, parallelism, fn);
}

PartialNorm ComputePartialNormCpu(absl::Span<const GradTensor> tensors,
                                  double p, const CpuNormOptions& options) {
  // Capped so chunk offsets cannot overflow; no tensor is that large.
  const int64_t chunk_elements =
      options.chunk_elements > 0
          ? std::min<int64_t>(options.chunk_elements, int64_t{1} << 48)
          : kDefaultChunkElements;
  const ReduceSpec spec{KindFor(p), p, options.fp32_accumulation};

  // Per-thread scratch, reused across calls: at 10,000 tensors these arrays
  // are hundreds of KiB, and fresh allocations would page-fault on every call.
  thread_local Scratch scratch;
  std::vector<size_t>& first_chunk = scratch.first_chunk;
  std::vector<TaskSpan>& tasks = scratch.tasks;
  std::vector<double>& chunk_value = scratch.chunk_value;
  first_chunk.resize(tensors.size() + 1);
  tasks.clear();

  int64_t total_elements = 0;
  for (const GradTensor& g : tensors) total_elements += g.numel;
  const int parallelism = Parallelism(options.num_threads, total_elements);
  const int64_t task_elements = TaskElements(total_elements, parallelism);

  // One pass over the tensors numbers the chunks (slot = global chunk index)
  // and cuts them into tasks of about task_elements. How chunks are grouped
  // into tasks never changes the result: each chunk writes its own slot.
  size_t slot = 0;
  int64_t pending = task_elements;
  for (size_t t = 0; t < tensors.size(); ++t) {
    first_chunk[t] = slot;
    const int64_t numel = tensors[t].numel;
    for (int64_t c = 0; c * chunk_elements < numel; ++c, ++slot) {
      if (pending >= task_elements) {
        tasks.push_back(TaskSpan{t, c, slot, 0});
        pending = 0;
      }
      ++tasks.back().count;
      pending += std::min(chunk_elements, numel - c * chunk_elements);
    }
  }
  first_chunk[tensors.size()] = slot;
  chunk_value.resize(slot);

  RunTasks(static_cast<int64_t>(tasks.size()), parallelism,
           options.parallel_for, [&](int64_t task) {
             ReduceTask(tensors.data(), tasks[task], chunk_elements, spec,
                        chunk_value.data());
           });

  // Fixed combine order: chunks of a tensor in order, then tensors in order.
  PartialNorm result;
  if (options.per_tensor) result.per_tensor.resize(tensors.size());
  const bool is_max = spec.kind == NormKind::kMaxAbs;
  for (size_t t = 0; t < tensors.size(); ++t) {
    double value = 0.0;
    for (size_t c = first_chunk[t]; c < first_chunk[t + 1]; ++c) {
      const double v = chunk_value[c];
      value = is_max ? NanMax(value, v) : value + v;
      if (!std::isfinite(v) && !result.nonfinite) {
        const int64_t begin =
            static_cast<int64_t>(c - first_chunk[t]) * chunk_elements;
        const int64_t end = std::min(begin + chunk_elements, tensors[t].numel);
        result.nonfinite = is_max || AnyNonFinite(tensors[t], begin, end);
      }
    }
    if (options.per_tensor) result.per_tensor[t] = value;
    result.value = is_max ? NanMax(result.value, value) : result.value + value;
  }
  if (chunk_value.capacity() > (size_t{1} << 20)) scratch = Scratch();  // cap
  return result;
}

void ScaleInPlaceCpu(absl::Span<const GradTensor> tensors, double coef,
                     int num_threads, const CpuParallelFor* parallel_for) {
  std::vector<ScalePiece> pieces;
  int64_t total_elements = 0;
  for (const GradTensor& g : tensors) {
    char* base = static_cast<char*>(g.data);
    const size_t size = ElementSize(g.dtype);
    for (int64_t off = 0; off < g.numel; off += kScaleElements) {
      pieces.push_back(ScalePiece{
          base + off * size, std::min(kScaleElements, g.numel - off), g.dtype});
    }
    total_elements += g.numel;
  }
  if (coef > std::numeric_limits<float>::max()) {
    // Beyond fp32 the coefficient cannot be a float operand; form the products
    // in fp64 (a path no clipping coefficient, always < 1, takes).
    for (const ScalePiece& piece : pieces) {
      for (int64_t i = 0; i < piece.numel; ++i) {
        switch (piece.dtype) {
          case DType::kFloat32: {
            float* x = static_cast<float*>(piece.data) + i;
            *x = static_cast<float>(*x * coef);
            break;
          }
          case DType::kFloat64:
            static_cast<double*>(piece.data)[i] *= coef;
            break;
          case DType::kBFloat16: {
            uint16_t* x = static_cast<uint16_t*>(piece.data) + i;
            *x = half_internal::FloatToBFloat16Bits(static_cast<float>(
                half_internal::BFloat16BitsToFloat(*x) * coef));
            break;
          }
          case DType::kFloat16: {
            uint16_t* x = static_cast<uint16_t*>(piece.data) + i;
            *x = half_internal::FloatToHalfBits(
                static_cast<float>(half_internal::HalfBitsToFloat(*x) * coef));
            break;
          }
        }
      }
    }
    return;
  }
  // Consecutive pieces form one task, as for the norm: thousands of small
  // tensors would otherwise cost an atomic claim each.
  const int parallelism = Parallelism(num_threads, total_elements);
  const int64_t task_elements = TaskElements(total_elements, parallelism);
  std::vector<size_t> task_begin;
  int64_t pending = task_elements;
  for (size_t i = 0; i < pieces.size(); ++i) {
    if (pending >= task_elements) {
      task_begin.push_back(i);
      pending = 0;
    }
    pending += pieces[i].numel;
  }
  task_begin.push_back(pieces.size());
  // Last tensor first: clipping follows the norm pass, which read the tensors
  // first to last, so the last ones read are the ones still in cache; going
  // forward would evict them before reaching them.
  const int64_t num_tasks = static_cast<int64_t>(task_begin.size()) - 1;
  RunTasks(num_tasks, parallelism, parallel_for, [&](int64_t i) {
    const int64_t task = num_tasks - 1 - i;
    ScaleTask(pieces.data(), task_begin[task], task_begin[task + 1], coef);
  });
}

}  // namespace kernels_internal
}  // namespace gradnorm
