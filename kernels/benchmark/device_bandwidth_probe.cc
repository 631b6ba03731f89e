#include "kernels/benchmark/device_bandwidth_probe.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/benchmark/device_bandwidth_probe_kernels.h"
#include "kernels/cuda_status.h"

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
  RETURN_IF_CUDA_ERROR(
      cudaMemsetAsync(probe->buffer_, 0, probe->words_ * 16, stream));
  void* block_sums = nullptr;
  RETURN_IF_CUDA_ERROR(cudaMalloc(&block_sums, sizeof(float) * probe->blocks_));
  probe->block_sums_ = static_cast<float*>(block_sums);
  ASSIGN_OR_RETURN(probe->timer_, CudaEventTimer::Create());
  RETURN_IF_CUDA_ERROR(cudaStreamSynchronize(stream));
  return probe;
}

DeviceBandwidthProbe::~DeviceBandwidthProbe() {
  cudaSetDevice(device_);
  timer_.reset();
  cudaFree(block_sums_);
  cudaFree(buffer_);
}

absl::StatusOr<double> DeviceBandwidthProbe::ReadSeconds(int passes) {
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  return timer_->SecondsPerCall(stream_, passes, [&]() -> absl::Status {
    RETURN_IF_CUDA_ERROR(
        LaunchReadProbe(buffer_, words_, blocks_, block_sums_, stream_));
    return absl::OkStatus();
  });
}

absl::StatusOr<double> DeviceBandwidthProbe::ReadWriteSeconds(int passes) {
  RETURN_IF_CUDA_ERROR(cudaSetDevice(device_));
  return timer_->SecondsPerCall(stream_, passes, [&]() -> absl::Status {
    RETURN_IF_CUDA_ERROR(
        LaunchReadWriteProbe(buffer_, words_, blocks_, stream_));
    return absl::OkStatus();
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
