// Times work enqueued on a CUDA stream with a pair of CUDA events: the seconds
// per call of `calls` calls enqueued back to back (so one launch's delay is
// spread over all of them).
//
//   ASSIGN_OR_RETURN(std::unique_ptr<CudaEventTimer> timer,
//                    CudaEventTimer::Create());
//   ASSIGN_OR_RETURN(double seconds, timer->SecondsPerCall(stream, 5, [&] {
//     return Enqueue(stream);  // an absl::Status
//   }));
//
// Errors: as CudaErrorToStatus, or the first error `enqueue` returns.
// Thread-safety: one thread at a time per timer.
#ifndef GRADNORM_KERNELS_BENCHMARK_CUDA_EVENT_TIMER_H_
#define GRADNORM_KERNELS_BENCHMARK_CUDA_EVENT_TIMER_H_

#include <cuda_runtime_api.h>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda_status.h"

namespace gradnorm {
namespace kernels_internal {

class CudaEventTimer {
 public:
  // Events on the current device.
  static absl::StatusOr<std::unique_ptr<CudaEventTimer>> Create() {
    std::unique_ptr<CudaEventTimer> timer(new CudaEventTimer());
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&timer->start_));
    RETURN_IF_CUDA_ERROR(cudaEventCreate(&timer->stop_));
    return timer;
  }
  ~CudaEventTimer() {
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
  }
  CudaEventTimer(const CudaEventTimer&) = delete;
  CudaEventTimer& operator=(const CudaEventTimer&) = delete;

  // `enqueue` enqueues one call on `stream` and returns an absl::Status.
  // INVALID_ARGUMENT for calls < 1.
  template <typename Enqueue>
  absl::StatusOr<double> SecondsPerCall(cudaStream_t stream, int calls,
                                        const Enqueue& enqueue) {
    if (calls < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("calls is ", calls, "; expected at least 1"));
    }
    RETURN_IF_CUDA_ERROR(cudaEventRecord(start_, stream));
    for (int i = 0; i < calls; ++i) {
      if (absl::Status s = enqueue(); !s.ok()) return s;
    }
    RETURN_IF_CUDA_ERROR(cudaEventRecord(stop_, stream));
    RETURN_IF_CUDA_ERROR(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    RETURN_IF_CUDA_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e-3 / calls;
  }

 private:
  CudaEventTimer() = default;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

}  // namespace kernels_internal
}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_BENCHMARK_CUDA_EVENT_TIMER_H_
