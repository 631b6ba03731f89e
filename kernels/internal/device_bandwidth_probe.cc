#include "kernels/internal/device_bandwidth_probe.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/internal/cuda_status.h"
#include "kernels/internal/device_bandwidth_probe_kernels.h"

namespace gradnorm {
namespace kernels_internal {
absl::StatusOr<std::unique_ptr<DeviceBandwidthProbe>>
DeviceBandwidthProbe::Create(int device, size_t bytes, cudaStream_t stream) {
  std::unique_ptr<DeviceBandwidthProbe> probe(new DeviceBandwidthProbe());
  probe->device_ = device;
  probe->stream_ = stream;
  probe->words_ = (bytes + 15) / 16;
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device));
  int sms = 0;
  RETURN_IF_CUDA_ERROR(
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  probe->blocks_ = sms * kProbeBlocksPerSm;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&probe->buffer_, probe->words_ * 16));
  RETURN_IF_CUDA_ERROR(cudaMemsetAsync(probe->buffer_, 0, probe->words_ * 16,
                                       stream));
  void* block_sums = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&block_sums, sizeof(float) * probe->blocks_));
  probe->block_sums_ = static_cast<float*>(block_sums);
  RETURN_IF_CUDA_ERROR(cudaEventCreate(&probe->start_));
  RETURN_IF_CUDA_ERROR(cudaEventCreate(&probe->stop_));
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  return probe;
}

DeviceBandwidthProbe::~DeviceBandwidthProbe() {
  cudaSetDevice(device_);
  if (start_ != nullptr) cudaEventDestroy(start_);
  if (stop_ != nullptr) cudaEventDestroy(stop_);
  cudaFree(block_sums_);
  cudaFree(buffer_);
}

template <typename Enqueue>
absl::StatusOr<double> DeviceBandwidthProbe::Timed(int passes,
                                                   const Enqueue& enqueue) {
  if (passes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("passes is ", passes, "; expected at least 1"));
  }
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  RETURN_IF_CUDA_ERROR(cudaEventRecord(start_, stream_));
  for (int i = 0; i < passes; ++i) RETURN_IF_CUDA_ERROR(enqueue());
  RETURN_IF_CUDA_ERROR(cudaEventRecord(stop_, stream_));
  RETURN_IF_CUDA_ERROR(cudaEventSynchronize(stop_));
  float ms = 0.0f;
  RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
  return ms * 1e-3 / passes;
}

absl::StatusOr<double> DeviceBandwidthProbe::ReadSeconds(int passes) {
  return Timed(passes, [&] {
    return LaunchReadProbe(buffer_, words_, blocks_, block_sums_, stream_);
  });
}

absl::StatusOr<double> DeviceBandwidthProbe::ReadWriteSeconds(int passes) {
  return Timed(passes, [&] {
    return LaunchReadWriteProbe(buffer_, words_, blocks_, stream_);
  });
}

absl::StatusOr<double> DevicePeakBytesPerSecond(int device) {
  int clock_khz = 0;
  int bus_bits = 0;
  RETURN_IF_CUDA_ERROR(
      cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
  RETURN_IF_CUDA_ERROR(cudaDeviceGetAttribute(
      &bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  if (clock_khz <= 0 || bus_bits <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cuda:", device, " reports memory clock ", clock_khz, " kHz and bus ",
        bus_bits, " bits; expected both positive"));
  }
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0);
}

}  // namespace kernels_internal
}  // namespace gradnorm
