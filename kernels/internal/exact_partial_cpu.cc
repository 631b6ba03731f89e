#include "kernels/internal/exact_partial_cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>

#include "kernels/internal/thread_pool.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

// Elements per task; tasks never span tensors, so per-tensor sums are kept.
constexpr int64_t kTaskElements = int64_t{1} << 18;
// Bins take a 48-bit square 2^16 times before they must be emptied.
constexpr int64_t kFlushElements = int64_t{1} << 16;
// Below this many elements one thread is faster than waking others.
constexpr int64_t kSerialElements = int64_t{1} << 15;

struct Piece {
  size_t tensor;
  int64_t begin;
  int64_t end;
};

// Integer significand sums by biased exponent, of 32- or 16-bit elements
// decoded into (significand, biased exponent). Two tables, alternating
// elements, so consecutive elements of one exponent do not wait on each
// other's addition.
struct Bins {
  uint64_t sum[2][256];
  bool nan = false;
  bool inf = false;

  Bins() { std::memset(sum, 0, sizeof(sum)); }

  // Adds the bins to `out` as (significand sum) * 2^(scale * (exponent -
  // bias)), and empties them. `bias` is that of the format and its
  // significand bits (fp32: 150; fp16: 25); subnormals use exponent 1.
  void FlushTo(ExactSum* out, int bias, bool squares) {
    for (int e = 0; e < 256; ++e) {
      const uint64_t s = sum[0][e] + sum[1][e];  // < 2^64: see kFlushElements
      if (s == 0) continue;
      const int exponent = std::max(e, 1) - bias;
      out->AddScaled(s, squares ? 2 * exponent : exponent);
      sum[0][e] = sum[1][e] = 0;
    }
  }
};

// fp32 bits (bf16 bits shifted up are fp32 bits too).
inline void AddFloatBits(uint32_t bits, bool squares, Bins& bins, int table) {
  const uint32_t e = (bits >> 23) & 0xff;
  if (e == 0xff) {
    ((bits & 0x7fffff) != 0 ? bins.nan : bins.inf) = true;
    return;
  }
  const uint64_t m = (bits & 0x7fffff) | (e != 0 ? 0x800000u : 0u);
  bins.sum[table][e] += squares ? m * m : m;
}

inline void AddHalfBits(uint16_t bits, bool squares, Bins& bins, int table) {
  const uint32_t e = (bits >> 10) & 0x1f;
  if (e == 0x1f) {
    ((bits & 0x3ff) != 0 ? bins.nan : bins.inf) = true;
    return;
  }
  const uint64_t m = (bits & 0x3ff) | (e != 0 ? 0x400u : 0u);
  bins.sum[table][e] += squares ? m * m : m;
}

void SumPiece(const GradTensor& g, int64_t begin, int64_t end, bool squares,
              ExactSum* out) {
  if (g.dtype == DType::kFloat64) {
    const double* x = static_cast<const double*>(g.data);
    for (int64_t i = begin; i < end; ++i) {
      squares ? out->AddSquare(x[i]) : out->AddAbs(x[i]);
    }
    return;
  }
  Bins bins;
  const bool half = g.dtype == DType::kFloat16;
  const int bias = half ? 25 : 150;
  for (int64_t block = begin; block < end; block += kFlushElements) {
    const int64_t stop = std::min(end, block + kFlushElements);
    switch (g.dtype) {
      case DType::kFloat32: {
        const uint32_t* x = static_cast<const uint32_t*>(g.data);
        for (int64_t i = block; i < stop; ++i) {
          AddFloatBits(x[i], squares, bins, i & 1);
        }
        break;
      }
      case DType::kBFloat16: {
        const uint16_t* x = static_cast<const uint16_t*>(g.data);
        for (int64_t i = block; i < stop; ++i) {
          AddFloatBits(uint32_t{x[i]} << 16, squares, bins, i & 1);
        }
        break;
      }
      case DType::kFloat16: {
        const uint16_t* x = static_cast<const uint16_t*>(g.data);
        for (int64_t i = block; i < stop; ++i) {
          AddHalfBits(x[i], squares, bins, i & 1);
        }
        break;
      }
      case DType::kFloat64:
        break;
    }
    bins.FlushTo(out, bias, squares);
  }
  if (bins.nan) out->AddNaN();
  if (bins.inf) out->AddInf();
}

}  // namespace

ExactPartial ComputeExactPartialCpu(absl::Span<const GradTensor> tensors,
                                    double p, const CpuNormOptions& options) {
  const bool squares = p == 2.0;
  std::vector<Piece> pieces;
  int64_t total_elements = 0;
  for (size_t t = 0; t < tensors.size(); ++t) {
    for (int64_t b = 0; b < tensors[t].numel; b += kTaskElements) {
      pieces.push_back(
          Piece{t, b, std::min(tensors[t].numel, b + kTaskElements)});
    }
    total_elements += tensors[t].numel;
  }
  std::vector<ExactSum> sums(pieces.size());
  auto run = [&](int64_t i) {
    const Piece& piece = pieces[i];
    SumPiece(tensors[piece.tensor], piece.begin, piece.end, squares, &sums[i]);
  };
  const int parallelism =
      total_elements < kSerialElements
          ? 1
          : (options.num_threads > 0 ? options.num_threads
                                     : ThreadPool::HardwareThreads());
  const int64_t n = static_cast<int64_t>(pieces.size());
  if (options.parallel_for != nullptr && *options.parallel_for &&
      parallelism > 1 && n > 1) {
    (*options.parallel_for)(n, std::function<void(int64_t)>(run));
  } else {
    ThreadPool::Default().ParallelFor(n, parallelism, run);
  }
  // Exact, so any merge order gives the same sum.
  ExactPartial result;
  if (options.per_tensor) result.per_tensor.resize(tensors.size());
  for (size_t i = 0; i < pieces.size(); ++i) {
    result.total.Merge(sums[i]);
    if (options.per_tensor) result.per_tensor[pieces[i].tensor].Merge(sums[i]);
  }
  return result;
}

}  // namespace kernels_internal
}  // namespace gradnorm
