// Throughput of ComputePartialNorm and ScaleInPlace on realistic gradient sets,
// as a ratio to the machine's memory bandwidth measured in the same process
// (kernels/benchmark/bandwidth_probe.h) over the same number of bytes.
//
//   bazel run -c opt //kernels/benchmark:partial_norm_benchmark
//
// Workloads:
//   gpt2_124m  the 148 parameter tensors of GPT-2 small (124,439,808 elements),
//              each its own 64-byte-aligned allocation, fp32 or bf16;
//   gpt2_124m_wide  the same tensors, each value scaled by 2^-j for j spread
//              over 0..40: every block of the exact kernels spans ~40 binades,
//              more than its SIMD path takes (its worst case);
//   10k_x_1k   10,000 fp32 tensors of 1,000 elements;
//   clip       ScaleInPlace of gpt2_124m fp32 or bf16 (alternately by 0.5 and
//              by 2, so the values stay normal from one iteration to the next).
// Each call is followed by one pass of the probe (a SIMD sum over as many bytes
// for reads, an in-place add for clip), so both see the same machine load.
// Counters: bytes_per_second (gradient bytes / mean wall time per call),
// limit_bytes_per_second (the probe's fastest pass), ratio_to_limit (fastest
// call vs fastest probe pass) and mean_ratio_to_limit (mean vs mean). "fp32acc"
// variants accumulate in fp32, to show what fp64 costs; "exact" variants sum
// with no rounding (PartialNormOptions::exact), to show what exactness costs.
#include <algorithm>
#include <chrono>
#include <cmath>
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
#include "kernels/benchmark/bandwidth_probe.h"
#include "kernels/benchmark/gpt2_workload.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/half.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace {

using kernels_internal::BandwidthProbe;

// The workloads are built once and shared by the benchmarks.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

class Workload {
 public:
  Workload(const std::vector<int64_t>& sizes, DType dtype, bool wide) {
    kernels_internal::GradientLikeValues values;
    for (int64_t n : sizes) {
      const size_t bytes = static_cast<size_t>(n) * *DTypeSize(dtype);
      void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
      buffers_.emplace_back(p);
      for (int64_t i = 0; i < n; ++i) {
        const float v =
            wide ? std::ldexp(values.Next(), -static_cast<int>(i * 7919 % 41))
                 : values.Next();
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

enum class Shape { kGpt2, kGpt2Wide, k10kx1k };

const Workload& GetWorkload(Shape shape, DType dtype) {
  static auto* cache =
      new std::map<std::pair<Shape, DType>, std::unique_ptr<Workload>>();
  auto& slot = (*cache)[{shape, dtype}];
  if (slot == nullptr) {
    slot = std::make_unique<Workload>(shape == Shape::k10kx1k
                                          ? std::vector<int64_t>(10000, 1000)
                                          : kernels_internal::Gpt2SmallSizes(),
                                      dtype, shape == Shape::kGpt2Wide);
  }
  return *slot;
}

// Times calls of the kernel under test, each followed (untimed by the
// framework) by one pass of the bandwidth probe over the same number of bytes,
// so kernel and probe see the same load from the rest of the machine.
class Interleaved {
 public:
  Interleaved(size_t bytes, bool read_write)
      : probe_(bytes), read_write_(read_write) {
    // Warm-up: the probe buffer's first pass also pays page faults.
    RunProbe();
  }

  template <typename F>
  void Time(F&& kernel) {
    const auto start = std::chrono::steady_clock::now();
    kernel();
    const std::chrono::duration<double> d =
        std::chrono::steady_clock::now() - start;
    kernel_total_ += d.count();
    kernel_best_ = std::min(kernel_best_, d.count());
  }

  void RunProbe() {
    const double s = read_write_ ? probe_.ReadWriteOnce(0) : probe_.ReadOnce(0);
    benchmark::DoNotOptimize(probe_.last_sum());
    probe_total_ += s;
    probe_best_ = std::min(probe_best_, s);
    ++probe_runs_;
  }

  // Counters: bytes_per_second (mean over calls), limit_bytes_per_second (the
  // probe's best pass), ratio_to_limit (fastest call over the probe's fastest
  // pass, both best of many interleaved runs) and mean_ratio_to_limit (mean
  // over mean).
  void Report(benchmark::State& state, size_t bytes) {
    const double b = static_cast<double>(bytes);
    const int64_t calls = static_cast<int64_t>(state.iterations());
    state.counters["bytes_per_second"] = b * calls / kernel_total_;
    state.counters["limit_bytes_per_second"] = b / probe_best_;
    state.counters["ratio_to_limit"] = probe_best_ / kernel_best_;
    state.counters["mean_ratio_to_limit"] =
        (probe_total_ / probe_runs_) / (kernel_total_ / calls);
  }

 private:
  BandwidthProbe probe_;
  bool read_write_;
  double kernel_total_ = 0.0;
  double kernel_best_ = 1e300;
  double probe_total_ = 0.0;
  double probe_best_ = 1e300;
  int64_t probe_runs_ = 0;
};

// How the partial is summed: fp64 (the default), fp32 (to show what fp64
// costs), or exactly (PartialNormOptions::exact: what layout independence
// costs).
enum class Sum { kFp64, kFp32, kExact };

void BM_PartialNorm(benchmark::State& state, Shape shape, DType dtype, double p,
                    Sum sum) {
  const Workload& w = GetWorkload(shape, dtype);
  if (shape != Shape::k10kx1k &&
      w.elements() != kernels_internal::kGpt2SmallElements) {
    state.SkipWithError("GPT-2 small should have 124,439,808 elements");
    return;
  }
  PartialNormOptions options;
  options.fp32_accumulation = sum == Sum::kFp32;
  options.exact = sum == Sum::kExact;
  Interleaved timer(w.bytes(), /*read_write=*/false);
  for (auto _ : state) {
    absl::StatusOr<PartialNorm> r;
    timer.Time([&] { r = ComputePartialNorm(w.tensors(), p, options); });
    if (!r.ok()) {
      state.SkipWithError(std::string(r.status().message()).c_str());
      return;
    }
    benchmark::DoNotOptimize(r->value);
    state.PauseTiming();
    timer.RunProbe();
    state.ResumeTiming();
  }
  timer.Report(state, w.bytes());
}

void BM_Clip(benchmark::State& state, DType dtype) {
  const Workload& w = GetWorkload(Shape::kGpt2, dtype);
  Interleaved timer(w.bytes(), /*read_write=*/true);
  int64_t i = 0;
  for (auto _ : state) {
    absl::Status s;
    timer.Time(
        [&] { s = ScaleInPlace(w.tensors(), (i++ % 2 == 0) ? 0.5 : 2.0); });
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
    state.PauseTiming();
    timer.RunProbe();
    state.ResumeTiming();
  }
  timer.Report(state, w.bytes());
}

constexpr double kInf = std::numeric_limits<double>::infinity();

BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_p2, Shape::kGpt2,
                  DType::kFloat32, 2.0, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_pinf, Shape::kGpt2,
                  DType::kFloat32, kInf, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_p2_fp32acc, Shape::kGpt2,
                  DType::kFloat32, 2.0, Sum::kFp32)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_p2, Shape::kGpt2,
                  DType::kBFloat16, 2.0, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_pinf, Shape::kGpt2,
                  DType::kBFloat16, kInf, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_p2_fp32acc, Shape::kGpt2,
                  DType::kBFloat16, 2.0, Sum::kFp32)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_fp32_p2_exact, Shape::kGpt2,
                  DType::kFloat32, 2.0, Sum::kExact)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_bf16_p2_exact, Shape::kGpt2,
                  DType::kBFloat16, 2.0, Sum::kExact)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_wide_fp32_p2, Shape::kGpt2Wide,
                  DType::kFloat32, 2.0, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, gpt2_124m_wide_fp32_p2_exact,
                  Shape::kGpt2Wide, DType::kFloat32, 2.0, Sum::kExact)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PartialNorm, 10k_x_1k_fp32_p2, Shape::k10kx1k,
                  DType::kFloat32, 2.0, Sum::kFp64)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PartialNorm, 10k_x_1k_fp32_p2_fp32acc, Shape::k10kx1k,
                  DType::kFloat32, 2.0, Sum::kFp32)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Clip, gpt2_124m_fp32_x0 .5, DType::kFloat32)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Clip, gpt2_124m_bf16_x0 .5, DType::kBFloat16)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace gradnorm
