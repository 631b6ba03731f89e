// Throughput of ComputePartialNorm and ScaleInPlace on realistic gradient sets,
// as a ratio to the machine's memory bandwidth measured in the same process
// (kernels/internal/bandwidth_probe.h) over the same number of bytes.
//
//   bazel run -c opt //kernels:partial_norm_benchmark
//
// Workloads:
//   gpt2_124m  the 148 parameter tensors of GPT-2 small (124,439,808 elements),
//              each its own 64-byte-aligned allocation, fp32 or bf16;
//   10k_x_1k   10,000 fp32 tensors of 1,000 elements;
//   clip       ScaleInPlace of gpt2_124m fp32 (alternately by 0.5 and by 2, so
//              the values stay normal from one iteration to the next).
// Counters: bytes_per_second (gradient bytes / wall time per call) and
// ratio_to_limit (that over the probe: a SIMD sum for reads, an in-place add
// for clip); best_ratio_to_limit uses the fastest call instead of the mean. "fp32acc" variants accumulate in fp32, to show what fp64 costs.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/bandwidth_probe.h"
#include "kernels/internal/half.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace {

using kernels_internal::BandwidthProbe;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

class Workload {
 public:
  Workload(const std::vector<int64_t>& sizes, DType dtype) {
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int64_t n : sizes) {
      const size_t bytes = static_cast<size_t>(n) * *DTypeSize(dtype);
      void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      buffers_.emplace_back(p);
      // Gradient-like values in about [-0.01, 0.01]; a cheap generator, since
      // 124M values are drawn.
      for (int64_t i = 0; i < n; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        const float v =
            static_cast<float>(static_cast<int64_t>(state >> 11) %
                               2000001 - 1000000) * 1e-8f;
        if (dtype == DType::kFloat32) {
          static_cast<float*>(p)[i] = v;
        } else {
          static_cast<uint16_t*>(p)[i] = half_internal::FloatToBFloat16Bits(v);
        }
      }
      tensors_.push_back(GradTensor{p, n, dtype, Device::Cpu(), false});
      bytes_ += bytes;
      elements_ += n;
    }
  }
  const std::vector<GradTensor>& tensors() const { return tensors_; }
  size_t bytes() const { return bytes_; }
  int64_t elements() const { return elements_; }

 private:
  std::vector<std::unique_ptr<void, FreeDeleter>> buffers_;
  std::vector<GradTensor> tensors_;
  size_t bytes_ = 0;
  int64_t elements_ = 0;
};

std::vector<int64_t> Gpt2Sizes() {
  constexpr int64_t d = 768;
  std::vector<int64_t> sizes = {50257 * d, 1024 * d};  // wte, wpe
  for (int layer = 0; layer < 12; ++layer) {
    const std::vector<int64_t> block = {
        d,     d,              // ln_1 weight, bias
        d * 3 * d, 3 * d,      // attn.c_attn weight, bias
        d * d, d,              // attn.c_proj weight, bias
        d,     d,              // ln_2 weight, bias
        d * 4 * d, 4 * d,      // mlp.c_fc weight, bias
        4 * d * d, d,          // mlp.c_proj weight, bias
    };
    sizes.insert(sizes.end(), block.begin(), block.end());
  }
  sizes.push_back(d);  // ln_f weight
  sizes.push_back(d);  // ln_f bias
  return sizes;
}

enum class Shape { kGpt2, k10kx1k };

const Workload& GetWorkload(Shape shape, DType dtype) {
  static auto* cache = new std::map<std::pair<Shape, DType>,
                                    std::unique_ptr<Workload>>();
  auto& slot = (*cache)[{shape, dtype}];
  if (slot == nullptr) {
    slot = std::make_unique<Workload>(
        shape == Shape::kGpt2 ? Gpt2Sizes() : std::vector<int64_t>(10000, 1000),
        dtype);
  }
  return *slot;
}

// Probe results per (bytes, read-write?), measured once per process.
double LimitBytesPerSecond(size_t bytes, bool read_write) {
  static auto* cache = new std::map<std::pair<size_t, bool>, double>();
  auto it = cache->find({bytes, read_write});
  if (it != cache->end()) return it->second;
  BandwidthProbe probe(bytes);
  const double limit = read_write ? probe.ReadWriteBytesPerSecond(0)
                                  : probe.ReadBytesPerSecond(0);
  benchmark::DoNotOptimize(probe.last_sum());
  cache->emplace(std::make_pair(bytes, read_write), limit);
  return limit;
}

// Wall time of every call: the mean gives bytes_per_second, the fastest call
// gives best_ratio_to_limit, comparable with the probe's best-of-runs on a
// machine where other processes compete for the two cores.
class CallTimer {
 public:
  void Start() { start_ = std::chrono::steady_clock::now(); }
  void Stop() {
    const std::chrono::duration<double> d =
        std::chrono::steady_clock::now() - start_;
    total_ += d.count();
    best_ = std::min(best_, d.count());
  }
  double total() const { return total_; }
  double best() const { return best_; }

 private:
  std::chrono::steady_clock::time_point start_;
  double total_ = 0.0;
  double best_ = 1e300;
};

void Report(benchmark::State& state, size_t bytes, const CallTimer& timer,
            bool read_write) {
  const double bps =
      static_cast<double>(bytes) * static_cast<double>(state.iterations()) /
      timer.total();
  const double limit = LimitBytesPerSecond(bytes, read_write);
  state.counters["bytes_per_second"] = bps;
  state.counters["limit_bytes_per_second"] = limit;
  state.counters["ratio_to_limit"] = bps / limit;
  state.counters["best_ratio_to_limit"] =
      static_cast<double>(bytes) / timer.best() / limit;
}

void BM_PartialNorm(benchmark::State& state, Shape shape, DType dtype, double p,
                    bool fp32_accumulation) {
  const Workload& w = GetWorkload(shape, dtype);
  if (shape == Shape::kGpt2 && w.elements() != 124439808) {
    state.SkipWithError("GPT-2 small should have 124,439,808 elements");
    return;
  }
  PartialNormOptions options;
  options.fp32_accumulation = fp32_accumulation;
  LimitBytesPerSecond(w.bytes(), false);  // probe before timing, not inside
  CallTimer timer;
  for (auto _ : state) {
    timer.Start();
    absl::StatusOr<PartialNorm> r = ComputePartialNorm(w.tensors(), p, options);
    timer.Stop();
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r->value);
  }
  Report(state, w.bytes(), timer, false);
}

void BM_Clip(benchmark::State& state) {
  const Workload& w = GetWorkload(Shape::kGpt2, DType::kFloat32);
  LimitBytesPerSecond(w.bytes(), true);
  int64_t i = 0;
  CallTimer timer;
  for (auto _ : state) {
    timer.Start();
    absl::Status s = ScaleInPlace(w.tensors(), (i++ % 2 == 0) ? 0.5 : 2.0);
    timer.Stop();
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
  }
  Report(state, w.bytes(), timer, true);
}

constexpr double kInf = std::numeric_limits<double>::infinity();

BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_p2, Shape::kGpt2,
                  DType::kFloat32, 2.0, false)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_pinf, Shape::kGpt2,
                  DType::kFloat32, kInf, false)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_p2_fp32acc, Shape::kGpt2,
                  DType::kFloat32, 2.0, true)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_p2, Shape::kGpt2,
                  DType::kBFloat16, 2.0, false)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_pinf, Shape::kGpt2,
                  DType::kBFloat16, kInf, false)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_p2_fp32acc, Shape::kGpt2,
                  DType::kBFloat16, 2.0, true)
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, 10k_x_1k_fp32_p2, Shape::k10kx1k,
                  DType::kFloat32, 2.0, false)
    ->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PartialNorm, 10k_x_1k_fp32_p2_fp32acc, Shape::k10kx1k,
                  DType::kFloat32, 2.0, true)
    ->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Clip)->Name("BM_Clip/gpt2_124m_fp32_x0.5")
    ->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gradnorm
