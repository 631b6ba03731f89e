// Throughput of the CUDA kernels on GPT-2 small's gradients in device memory,
// as a ratio to the GPU's memory bandwidth measured in the same process
// (kernels/benchmark/device_bandwidth_probe.h) over the same number of bytes,
// and to the device's nominal peak.
//
//   bazel run //kernels/benchmark:partial_norm_cuda_benchmark    # needs an
//   NVIDIA GPU, sm_80+
//
// Without a usable GPU it says why and exits 0.
//
// Workloads (the 148 tensors of GPT-2 small, 124,439,808 elements, each its
// own cudaMalloc, fp32 or bf16):
//   partial    ComputePartialNorm: one call's host round trip (validation,
//              workspace, kernels, copy back, wait), between CUDA events that
//              the idle stream stamps on either side of the call;
//   exact      ComputePartialNorm with exact (p = 2): the exact partial's host
//              round trip, as `partial`;
//   on_device  ComputePartialNormOnDevice: the fp64 result stays in device
//              memory (what NCCL reduces); 20 calls back to back per timing,
//              so this is the kernels' own throughput with no host round trip;
//   clip       ScaleInPlace, 10 calls back to back alternately by 0.5 and by 2
//              (the data ends each timing as it began).
// After each timing the probe makes 5 passes back to back (a plain read for the
// norms, an in-place add for clip) on the same stream, so both see the same
// GPU. Counters: bytes_per_second (gradient bytes / mean time per call),
// limit_bytes_per_second (the probe's fastest), ratio_to_limit (fastest call
// vs the probe's fastest pass) and ratio_to_peak (the bytes a call moves, read
// and written for clip, per second of its fastest time, over the nominal peak).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/status_macros.h"
#include "kernels/benchmark/cuda_event_timer.h"
#include "kernels/benchmark/device_bandwidth_probe.h"
#include "kernels/benchmark/gpt2_workload.h"
#include "kernels/cuda_status.h"
#include "kernels/grad_tensor.h"
#include "kernels/internal/half.h"
#include "kernels/internal/partial_norm_on_device.h"
#include "kernels/partial_norm.h"

namespace gradnorm {
namespace {

using kernels_internal::CudaEventTimer;
using kernels_internal::DeviceBandwidthProbe;

constexpr int kDevice = 0;
// Calls per timing: back to back, so one launch's delay is spread over many.
constexpr int kOnDeviceBatch = 20;
constexpr int kClipBatch = 10;  // even: x0.5 and x2 alternate
constexpr int kProbePasses = 5;

// GPT-2 small's gradients on cuda:0, built once per dtype.
class DeviceWorkload {
 public:
  static absl::StatusOr<std::unique_ptr<DeviceWorkload>> Create(DType dtype) {
    std::unique_ptr<DeviceWorkload> w(new DeviceWorkload());
    RETURN_IF_CUDA_ERROR(cudaSetDevice(kDevice));
    kernels_internal::GradientLikeValues values;
    std::vector<float> f32;
    std::vector<uint16_t> b16;
    for (int64_t n : kernels_internal::Gpt2SmallSizes()) {
      const size_t element = dtype == DType::kFloat32 ? 4 : 2;
      void* p = nullptr;
      RETURN_IF_CUDA_ERROR(cudaMalloc(&p, static_cast<size_t>(n) * element));
      w->buffers_.push_back(p);
      const void* host;
      if (dtype == DType::kFloat32) {
        f32.resize(n);
        for (float& v : f32) v = values.Next();
        host = f32.data();
      } else {
        b16.resize(n);
        for (uint16_t& v : b16) {
          v = half_internal::FloatToBFloat16Bits(values.Next());
        }
        host = b16.data();
      }
      RETURN_IF_CUDA_ERROR(cudaMemcpy(p, host, static_cast<size_t>(n) * element,
                                      cudaMemcpyHostToDevice));
      w->tensors_.push_back(
          GradTensor{p, n, dtype, Device::Cuda(kDevice), false});
      w->bytes_ += static_cast<size_t>(n) * element;
      w->elements_ += n;
    }
    return w;
  }
  ~DeviceWorkload() {
    for (void* p : buffers_) cudaFree(p);
  }

  const std::vector<GradTensor>& tensors() const { return tensors_; }
  size_t bytes() const { return bytes_; }
  int64_t elements() const { return elements_; }

 private:
  DeviceWorkload() = default;
  std::vector<void*> buffers_;
  std::vector<GradTensor> tensors_;
  size_t bytes_ = 0;
  int64_t elements_ = 0;
};

absl::StatusOr<const DeviceWorkload*> GetWorkload(DType dtype) {
  static auto* cache = new std::map<DType, std::unique_ptr<DeviceWorkload>>();
  auto& slot = (*cache)[dtype];
  if (slot == nullptr) {
    ASSIGN_OR_RETURN(std::unique_ptr<DeviceWorkload> w,
                     DeviceWorkload::Create(dtype));
    if (w->elements() != kernels_internal::kGpt2SmallElements) {
      return absl::InternalError(
          absl::StrCat("GPT-2 small has ", kernels_internal::kGpt2SmallElements,
                       " elements, the workload ", w->elements()));
    }
    slot = std::move(w);
  }
  return slot.get();
}

// Times enqueued work on one stream with CUDA events, and the probe's passes
// after each timing.
class Interleaved {
 public:
  static absl::StatusOr<std::unique_ptr<Interleaved>> Create(size_t bytes,
                                                             bool read_write) {
    std::unique_ptr<Interleaved> t(new Interleaved());
    t->read_write_ = read_write;
    RETURN_IF_CUDA_ERROR(cudaSetDevice(kDevice));
    RETURN_IF_CUDA_ERROR(
        cudaStreamCreateWithFlags(&t->stream_, cudaStreamNonBlocking));
    ASSIGN_OR_RETURN(t->timer_, CudaEventTimer::Create());
    ASSIGN_OR_RETURN(t->probe_,
                     DeviceBandwidthProbe::Create(kDevice, bytes, t->stream_));
    ASSIGN_OR_RETURN(t->peak_,
                     kernels_internal::DevicePeakBytesPerSecond(kDevice));
    // Warm-up: the first pass pays for page mapping and clocks ramping up.
    RETURN_IF_ERROR(t->RunProbe());
    return t;
  }
  ~Interleaved() {
    probe_.reset();
    timer_.reset();
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  cudaStream_t stream() const { return stream_; }

  // Times `calls` calls of `enqueue` (which enqueues on stream()); returns the
  // seconds per call.
  template <typename Enqueue>
  absl::StatusOr<double> Time(int calls, const Enqueue& enqueue) {
    ASSIGN_OR_RETURN(const double s,
                     timer_->SecondsPerCall(stream_, calls, enqueue));
    kernel_total_ += s;
    kernel_best_ = std::min(kernel_best_, s);
    ++kernel_runs_;
    return s;
  }

  absl::Status RunProbe() {
    ASSIGN_OR_RETURN(const double s,
                     read_write_ ? probe_->ReadWriteSeconds(kProbePasses)
                                 : probe_->ReadSeconds(kProbePasses));
    probe_best_ = std::min(probe_best_, s);
    return absl::OkStatus();
  }

  void Report(benchmark::State& state, size_t bytes) const {
    const double b = static_cast<double>(bytes);
    // An in-place pass reads and writes every byte.
    const double moved = read_write_ ? 2 * b : b;
    state.counters["bytes_per_second"] = b * kernel_runs_ / kernel_total_;
    state.counters["limit_bytes_per_second"] = b / probe_best_;
    state.counters["peak_bytes_per_second"] = peak_;
    state.counters["ratio_to_limit"] = probe_best_ / kernel_best_;
    state.counters["ratio_to_peak"] = moved / kernel_best_ / peak_;
  }

 private:
  Interleaved() = default;
  bool read_write_ = false;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<CudaEventTimer> timer_;
  std::unique_ptr<DeviceBandwidthProbe> probe_;
  double peak_ = 0.0;
  double kernel_total_ = 0.0;
  double kernel_best_ = std::numeric_limits<double>::infinity();
  int64_t kernel_runs_ = 0;
  double probe_best_ = std::numeric_limits<double>::infinity();
};

enum class Mode { kPartial, kExact, kOnDevice, kClip };

void BM_Cuda(benchmark::State& state, DType dtype, double p, Mode mode) {
  auto fail = [&](const absl::Status& status) {
    state.SkipWithError(std::string(status.ToString()).c_str());
  };
  absl::StatusOr<const DeviceWorkload*> w = GetWorkload(dtype);
  if (!w.ok()) return fail(w.status());
  absl::StatusOr<std::unique_ptr<Interleaved>> timer =
      Interleaved::Create((*w)->bytes(), /*read_write=*/mode == Mode::kClip);
  if (!timer.ok()) return fail(timer.status());
  Interleaved& t = **timer;
  struct CudaFree {
    void operator()(void* p) const { cudaFree(p); }
  };
  absl::StatusOr<std::unique_ptr<double, CudaFree>> result_buffer =
      []() -> absl::StatusOr<std::unique_ptr<double, CudaFree>> {
    void* p = nullptr;
    RETURN_IF_CUDA_ERROR(cudaMalloc(&p, sizeof(double)));
    return std::unique_ptr<double, CudaFree>(static_cast<double*>(p));
  }();
  if (!result_buffer.ok()) return fail(result_buffer.status());
  double* const device_result = result_buffer->get();
  PartialNormOptions norm_options;
  norm_options.cuda_stream = t.stream();
  norm_options.exact = mode == Mode::kExact;
  ScaleOptions scale_options;
  scale_options.cuda_stream = t.stream();
  const auto& tensors = (*w)->tensors();
  int64_t scaled = 0;
  double host_value = 0.0;
  auto one_call = [&]() -> absl::Status {
    switch (mode) {
      case Mode::kPartial:
      case Mode::kExact: {
        absl::StatusOr<PartialNorm> r =
            ComputePartialNorm(tensors, p, norm_options);
        if (!r.ok()) return r.status();
        host_value = r->value;
        return absl::OkStatus();
      }
      case Mode::kOnDevice:
        return ComputePartialNormOnDevice(tensors, p, device_result,
                                          norm_options);
      case Mode::kClip:
        return ScaleInPlace(tensors, (scaled++ % 2 == 0) ? 0.5 : 2.0,
                            scale_options);
    }
    return absl::InternalError("unknown mode");
  };
  const int calls = mode == Mode::kOnDevice ? kOnDeviceBatch
                    : mode == Mode::kClip   ? kClipBatch
                                            : 1;
  for (auto _ : state) {
    absl::StatusOr<double> seconds = t.Time(calls, one_call);
    if (!seconds.ok()) return fail(seconds.status());
    state.SetIterationTime(*seconds);
    if (absl::Status s = t.RunProbe(); !s.ok()) return fail(s);
  }
  benchmark::DoNotOptimize(host_value);
  t.Report(state, (*w)->bytes());
}

constexpr double kInf = std::numeric_limits<double>::infinity();

#define GRADNORM_CUDA_BENCHMARK(name, dtype, p, mode) \
  BENCHMARK_CAPTURE(BM_Cuda, name, dtype, p, mode)    \
      ->UseManualTime()                               \
      ->Unit(benchmark::kMicrosecond)

GRADNORM_CUDA_BENCHMARK(gpt2_124m_fp32_p2, DType::kFloat32, 2.0,
                        Mode::kPartial);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_fp32_pinf, DType::kFloat32, kInf,
                        Mode::kPartial);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_bf16_p2, DType::kBFloat16, 2.0,
                        Mode::kPartial);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_bf16_pinf, DType::kBFloat16, kInf,
                        Mode::kPartial);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_fp32_p2_exact, DType::kFloat32, 2.0,
                        Mode::kExact);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_bf16_p2_exact, DType::kBFloat16, 2.0,
                        Mode::kExact);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_fp32_p2_on_device, DType::kFloat32, 2.0,
                        Mode::kOnDevice);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_bf16_p2_on_device, DType::kBFloat16, 2.0,
                        Mode::kOnDevice);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_fp32_x0 .5, DType::kFloat32, 0.0,
                        Mode::kClip);
GRADNORM_CUDA_BENCHMARK(gpt2_124m_bf16_x0 .5, DType::kBFloat16, 0.0,
                        Mode::kClip);

// Why the GPU cannot run the benchmarks, or OK.
absl::Status CheckDevice() {
  int count = 0;
  RETURN_IF_CUDA_ERROR(cudaGetDeviceCount(&count));
  if (count == 0) {
    return absl::FailedPreconditionError("cudaGetDeviceCount returned 0");
  }
  int major = 0;
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(
      &major, cudaDevAttrComputeCapabilityMajor, kDevice));
  if (major < 8) {
    return absl::FailedPreconditionError(
        absl::StrCat("cuda:0 has compute capability ", major,
                     ".x; the kernels are built for sm_80 and newer"));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gradnorm

int main(int argc, char** argv) {
  if (absl::Status s = gradnorm::CheckDevice(); !s.ok()) {
    std::printf("partial_norm_cuda_benchmark: skipped, no usable GPU: %s\n",
                s.ToString().c_str());
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
