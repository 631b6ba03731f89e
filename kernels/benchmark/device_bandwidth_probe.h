// What a GPU's memory can do, for the CUDA kernels' benchmark to report a ratio
// to: the time of one pass over a buffer of the probe's own, as many bytes as
// the workload, either a plain read (16-byte loads, summed) or an in-place add
// (read + write), timed by CUDA events on the caller's stream. Benchmarks keep
// the fastest of many passes. Also the device's nominal peak bandwidth.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<DeviceBandwidthProbe> probe,
//                    DeviceBandwidthProbe::Create(/*device=*/0, bytes,
//                    stream));
//   ASSIGN_OR_RETURN(double seconds, probe->ReadSeconds(/*passes=*/5));
//
// Errors: as CudaErrorToStatus (FAILED_PRECONDITION where no device can run
// it, RESOURCE_EXHAUSTED for out of memory, INTERNAL otherwise).
// Thread-safety: one thread at a time per probe.
#ifndef GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_H_
#define GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/benchmark/cuda_event_timer.h"

namespace gradnorm {
namespace kernels_internal {

class DeviceBandwidthProbe {
 public:
  // A probe over `bytes` (rounded up to 16) of `device`'s memory, run on
  // `stream` (a stream of that device; nullptr = its default stream).
  static absl::StatusOr<std::unique_ptr<DeviceBandwidthProbe>> Create(
      int device, size_t bytes, cudaStream_t stream);
  ~DeviceBandwidthProbe();
  DeviceBandwidthProbe(const DeviceBandwidthProbe&) = delete;
  DeviceBandwidthProbe& operator=(const DeviceBandwidthProbe&) = delete;

  // Seconds per pass of `passes` read passes / in-place add passes over the
  // buffer, enqueued back to back (so the first launch's delay is spread over
  // them). INVALID_ARGUMENT for passes < 1.
  absl::StatusOr<double> ReadSeconds(int passes);
  absl::StatusOr<double> ReadWriteSeconds(int passes);

  size_t bytes() const { return words_ * 16; }

 private:
  DeviceBandwidthProbe() = default;

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  size_t words_ = 0;
  int blocks_ = 0;
  void* buffer_ = nullptr;
  float* block_sums_ = nullptr;
  std::unique_ptr<CudaEventTimer> timer_;
};

// `device`'s nominal memory bandwidth in bytes/s: 2 transfers per memory clock
// times the bus width.
absl::StatusOr<double> DevicePeakBytesPerSecond(int device);

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_BENCHMARK_DEVICE_BANDWIDTH_PROBE_H_
