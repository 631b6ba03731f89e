#include "kernels/internal/exact_partial_cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>

#include "kernels/internal/exact_block_cpu.h"

namespace gradnorm {
namespace kernels_internal {
namespace {

// Elements per task; tasks never span tensors, so per-tensor sums are kept.
constexpr int64_t kTaskElements = int64_t{1} << 18;
// Bins take a 48-bit square 2^16 times before they must be emptied (they are
// emptied after each block they sum).
constexpr int64_t kFlushElements = int64_t{1} << 16;

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

// fp32 bits (bf16 bits shifted up are fp32 bits too). Branch-free: NaN and
// Inf land in bin 255, which the caller looks into afterwards.
template <bool kSquares>
inline void AddFloatBits(uint32_t bits, Bins& bins, int table) {
  const uint32_t e = (bits >> 23) & 0xff;
  const uint64_t m = (bits & 0x7fffff) | (uint32_t{e != 0} << 23);
  bins.sum[table][e] += kSquares ? m * m : m;
}

// fp16 bits; NaN and Inf land in bin 31.
template <bool kSquares>
inline void AddHalfBits(uint16_t bits, Bins& bins, int table) {
  const uint32_t e = (bits >> 10) & 0x1f;
  const uint64_t m = (bits & 0x3ffu) | (uint32_t{e != 0} << 10);
  bins.sum[table][e] += kSquares ? m * m : m;
}

// Sets bins.nan / bins.inf from the block's elements of the all-ones
// exponent (what went to bin `top`), and empties that bin.
template <typename T, typename Widen>
void SortOutNonFinite(const T* x, int64_t begin, int64_t stop, int top,
                      int exponent_shift, uint32_t fraction_mask, Widen widen,
                      Bins& bins) {
  if (bins.sum[0][top] == 0 && bins.sum[1][top] == 0) return;
  for (int64_t i = begin; i < stop; ++i) {
    const uint32_t bits = widen(x[i]);
    if (((bits >> exponent_shift) & top) == static_cast<uint32_t>(top)) {
      ((bits & fraction_mask) != 0 ? bins.nan : bins.inf) = true;
    }
  }
  bins.sum[0][top] = bins.sum[1][top] = 0;
}

template <bool kSquares, typename T, typename Widen, typename Add>
void SumBlock(const T* x, int64_t begin, int64_t stop, Bins& bins, Widen widen,
              Add add) {
  int64_t i = begin;
  for (; i + 2 <= stop; i += 2) {
    add(widen(x[i]), bins, 0);
    add(widen(x[i + 1]), bins, 1);
  }
  if (i < stop) add(widen(x[i]), bins, 0);
}

// A block AddBlocksExact left ([block, stop) of g), summed in the bins,
// which are then added to `out` and emptied.
void SumBlockInBins(const GradTensor& g, int64_t block, int64_t stop,
                    bool squares, std::optional<Bins>& bins, ExactSum* out) {
  const int bias = g.dtype == DType::kFloat16 ? 25 : 150;
  if (!bins) bins.emplace();
  auto same = [](uint32_t v) { return v; };
  auto bf16 = [](uint16_t v) { return uint32_t{v} << 16; };
  auto half16 = [](uint16_t v) { return uint32_t{v}; };
  switch (g.dtype) {
    case DType::kFloat32: {
      const uint32_t* x = static_cast<const uint32_t*>(g.data);
      squares
          ? SumBlock<true>(x, block, stop, *bins, same, AddFloatBits<true>)
          : SumBlock<false>(x, block, stop, *bins, same, AddFloatBits<false>);
      SortOutNonFinite(x, block, stop, 255, 23, 0x7fffff, same, *bins);
      break;
    }
    case DType::kBFloat16: {
      const uint16_t* x = static_cast<const uint16_t*>(g.data);
      squares
          ? SumBlock<true>(x, block, stop, *bins, bf16, AddFloatBits<true>)
          : SumBlock<false>(x, block, stop, *bins, bf16, AddFloatBits<false>);
      SortOutNonFinite(x, block, stop, 255, 23, 0x7fffff, bf16, *bins);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* x = static_cast<const uint16_t*>(g.data);
      squares
          ? SumBlock<true>(x, block, stop, *bins, half16, AddHalfBits<true>)
          : SumBlock<false>(x, block, stop, *bins, half16, AddHalfBits<false>);
      SortOutNonFinite(x, block, stop, 31, 10, 0x3ff, half16, *bins);
      break;
    }
    case DType::kFloat64:
      break;
  }
  bins->FlushTo(out, bias, squares);
}

// 16- and 32-bit elements: in batches of blocks, by AddBlocksExact, or by
// exponent bins for a block it does not take (NaN or Inf, or too wide a
// range).
void SumPiece(const GradTensor& g, int64_t begin, int64_t end, bool squares,
              ExactSum* out) {
  if (g.dtype == DType::kFloat64) {
    const double* x = static_cast<const double*>(g.data);
    for (int64_t i = begin; i < end; ++i) {
      squares ? out->AddSquare(x[i]) : out->AddAbs(x[i]);
    }
    return;
  }
  static_assert(kExactBlockElements <= kFlushElements);
  const size_t element_size = g.dtype == DType::kFloat32 ? 4 : 2;
  std::optional<Bins> bins;
  ExactBlockRun run{static_cast<const char*>(g.data) + g.numel * element_size};
  for (int64_t batch = begin; batch < end; batch += kExactBatchElements) {
    const int64_t batch_end = std::min(end, batch + kExactBatchElements);
    const void* first = static_cast<const char*>(g.data) + batch * element_size;
    uint32_t left =
        AddBlocksExact(g.dtype, first, batch_end - batch, squares, &run, out);
    for (int b = 0; left != 0; ++b, left >>= 1) {
      if ((left & 1) == 0) continue;
      const int64_t block = batch + b * kExactBlockElements;
      SumBlockInBins(g, block, std::min(batch_end, block + kExactBlockElements),
                     squares, bins, out);
    }
  }
  if (bins && bins->nan) out->AddNaN();
  if (bins && bins->inf) out->AddInf();
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
  RunTasks(static_cast<int64_t>(pieces.size()),
           Parallelism(options.num_threads, total_elements),
           options.parallel_for, run);
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
