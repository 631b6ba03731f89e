#include "client/nccl_communicator.h"

#include <cstdint>
#include <functional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/internal/nan_flags.h"
#include "client/nccl_errors.h"
#include "common/status_macros.h"
#include "kernels/cuda_status.h"

namespace gradnorm {
namespace {

constexpr int kStaging = 0;  // host values staged on the device
constexpr int kWork = 1;     // values + NaN flags of a max

// Polls until NCCL finished a non-blocking operation on `comm` (creation, or a
// call that returned ncclInProgress), or the deadline.
absl::Status WaitUntilReady(ncclComm_t comm, absl::Time deadline,
                            absl::string_view call) {
  while (true) {
    ncclResult_t async = ncclSuccess;
    RETURN_IF_ERROR(NcclStatus(ncclCommGetAsyncError(comm, &async),
                               "ncclCommGetAsyncError"));
    if (async == ncclSuccess) return absl::OkStatus();
    if (async != ncclInProgress) return NcclStatus(async, call);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(call, " did not complete within the timeout"));
    }
    absl::SleepFor(absl::Microseconds(50));
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Wrap(
    ncclComm_t comm, cudaStream_t stream,
    const NcclCommunicatorOptions& options) {
  if (comm == nullptr) return absl::InvalidArgumentError("ncclComm_t is null");
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be > 0");
  }
  int rank = 0, size = 0, device = 0;
  RETURN_IF_ERROR(
      NcclStatus(ncclCommUserRank(comm, &rank), "ncclCommUserRank"));
  RETURN_IF_ERROR(NcclStatus(ncclCommCount(comm, &size), "ncclCommCount"));
  RETURN_IF_ERROR(
      NcclStatus(ncclCommCuDevice(comm, &device), "ncclCommCuDevice"));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(
      comm, stream, /*owns_comm=*/false, /*owns_stream=*/false, rank, size,
      device, options.timeout));
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>>
NcclCommunicator::CreateFromUniqueId(const ncclUniqueId& id, int rank, int size,
                                     int device,
                                     const NcclCommunicatorOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " of size ", size,
                     " is invalid: expected size >= 1 and 0 <= rank < size"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("timeout must be > 0");
  }
  RETURN_IF_ERROR(CudaErrorToStatus(cudaSetDevice(device), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  RETURN_IF_ERROR(CudaErrorToStatus(
      cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
      "cudaStreamCreateWithFlags"));
  // Non-blocking, so a peer that never joins cannot block us past the timeout.
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  absl::Status status =
      NcclStatus(ncclCommInitRankConfig(&comm, size, id, rank, &config),
                 "ncclCommInitRankConfig");
  if (status.ok()) {
    status = WaitUntilReady(comm, absl::Now() + options.timeout,
                            "ncclCommInitRankConfig");
  }
  if (!status.ok()) {
    if (comm != nullptr) ncclCommAbort(comm);
    cudaStreamDestroy(stream);
    return status;
  }
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(
      comm, stream, /*owns_comm=*/true, /*owns_stream=*/true, rank, size,
      device, options.timeout));
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, cudaStream_t stream,
                                   bool owns_comm, bool owns_stream, int rank,
                                   int size, int device, absl::Duration timeout)
    : comm_(comm),
      stream_(stream),
      owns_comm_(owns_comm),
      owns_stream_(owns_stream),
      rank_(rank),
      size_(size),
      device_(device),
      timeout_(timeout) {}

NcclCommunicator::~NcclCommunicator() {
  cudaSetDevice(device_);
  for (void* buffer : scratch_) {
    if (buffer != nullptr) cudaFree(buffer);
  }
  if (owns_comm_ && !aborted_) ncclCommDestroy(comm_);
  if (owns_stream_) cudaStreamDestroy(stream_);
}

absl::Status NcclCommunicator::Remember(absl::Status status) {
  if (!status.ok() && broken_.ok()) broken_ = status;
  return status;
}

absl::Status NcclCommunicator::Begin() const {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("NCCL communicator unusable after an earlier error: ",
                     broken_.message()));
  }
  return CudaErrorToStatus(cudaSetDevice(device_), "cudaSetDevice");
}

absl::Status NcclCommunicator::CheckRoot(int root) const {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " is out of range: expected [0, ",
                     size_, ")"));
  }
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Wait(absl::string_view call) {
  const absl::Time deadline = absl::Now() + timeout_;
  while (true) {
    ncclResult_t async = ncclSuccess;
    absl::Status status = NcclStatus(ncclCommGetAsyncError(comm_, &async),
                                     "ncclCommGetAsyncError");
    if (status.ok() && async != ncclSuccess && async != ncclInProgress) {
      status = NcclStatus(async, absl::StrCat(call, " (asynchronous error)"));
    }
    if (!status.ok()) {
      ncclCommAbort(comm_);
      aborted_ = true;
      return Remember(status);
    }
    const cudaError_t query = cudaStreamQuery(stream_);
    if (query == cudaSuccess && async == ncclSuccess) return absl::OkStatus();
    if (query != cudaSuccess && query != cudaErrorNotReady) {
      return Remember(
          CudaErrorToStatus(query, absl::StrCat("waiting for ", call)));
    }
    if (absl::Now() >= deadline) {
      ncclCommAbort(comm_);
      aborted_ = true;
      return Remember(absl::DeadlineExceededError(absl::StrCat(
          call, " on NCCL rank ", rank_, " of ", size_,
          " did not complete within ", absl::FormatDuration(timeout_),
          " (a peer died or never joined); communicator aborted")));
    }
    absl::SleepFor(absl::Microseconds(20));
  }
}

absl::StatusOr<void*> NcclCommunicator::Scratch(int which, size_t bytes) {
  if (scratch_bytes_[which] < bytes) {
    if (scratch_[which] != nullptr) {
      RETURN_IF_ERROR(CudaErrorToStatus(cudaFree(scratch_[which]), "cudaFree"));
      scratch_[which] = nullptr;
      scratch_bytes_[which] = 0;
    }
    RETURN_IF_ERROR(
        CudaErrorToStatus(cudaMalloc(&scratch_[which], bytes), "cudaMalloc"));
    scratch_bytes_[which] = bytes;
  }
  return scratch_[which];
}

absl::Status NcclCommunicator::AllReduceOnDevice(double* values, size_t count,
                                                 ReduceOp op) {
  if (op != ReduceOp::kSum && op != ReduceOp::kMax) {
    return absl::InvalidArgumentError("unknown reduce op: expected sum or max");
  }
  RETURN_IF_ERROR(Begin());
  if (count == 0) return absl::OkStatus();
  if (op == ReduceOp::kSum) {
    RETURN_IF_ERROR(
        Remember(NcclStatus(ncclAllReduce(values, values, count, ncclFloat64,
                                          ncclSum, comm_, stream_),
                            "ncclAllReduce(sum)")));
    return Wait("ncclAllReduce(sum)");
  }
  ASSIGN_OR_RETURN(void* work_bytes,
                   Scratch(kWork, 2 * count * sizeof(double)));
  double* work = static_cast<double*>(work_bytes);
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(work, values, count * sizeof(double),
                                        cudaMemcpyDeviceToDevice, stream_),
                        "cudaMemcpyAsync")));
  RETURN_IF_ERROR(Remember(CudaErrorToStatus(
      client_internal::LaunchMarkNaN(values, work + count, count, stream_),
      "MarkNaN kernel launch")));
  RETURN_IF_ERROR(
      Remember(NcclStatus(ncclAllReduce(work, work, 2 * count, ncclFloat64,
                                        ncclMax, comm_, stream_),
                          "ncclAllReduce(max)")));
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(values, work, count * sizeof(double),
                                        cudaMemcpyDeviceToDevice, stream_),
                        "cudaMemcpyAsync")));
  RETURN_IF_ERROR(Remember(CudaErrorToStatus(
      client_internal::LaunchApplyNaN(values, work + count, count, stream_),
      "ApplyNaN kernel launch")));
  return Wait("ncclAllReduce(max)");
}

absl::Status NcclCommunicator::BroadcastOnDevice(double* values, size_t count,
                                                 int root) {
  RETURN_IF_ERROR(CheckRoot(root));
  RETURN_IF_ERROR(Begin());
  if (count == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Remember(NcclStatus(
      ncclBroadcast(values, values, count, ncclFloat64, root, comm_, stream_),
      "ncclBroadcast")));
  return Wait("ncclBroadcast");
}

absl::Status NcclCommunicator::ThroughDevice(
    absl::Span<double> values,
    const std::function<absl::Status(double* device_values)>& collective) {
  const size_t bytes = values.size() * sizeof(double);
  ASSIGN_OR_RETURN(void* staging, Scratch(kStaging, bytes));
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(staging, values.data(), bytes,
                                        cudaMemcpyHostToDevice, stream_),
                        "cudaMemcpyAsync")));
  RETURN_IF_ERROR(collective(static_cast<double*>(staging)));
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(values.data(), staging, bytes,
                                        cudaMemcpyDeviceToHost, stream_),
                        "cudaMemcpyAsync")));
  return Wait("cudaMemcpyAsync");
}

absl::Status NcclCommunicator::AllReduce(absl::Span<double> values,
                                         ReduceOp op) {
  RETURN_IF_ERROR(Begin());
  if (values.empty()) return absl::OkStatus();
  return ThroughDevice(values, [&](double* device_values) {
    return AllReduceOnDevice(device_values, values.size(), op);
  });
}

absl::Status NcclCommunicator::Broadcast(absl::Span<double> values, int root) {
  RETURN_IF_ERROR(CheckRoot(root));
  RETURN_IF_ERROR(Begin());
  if (values.empty()) return absl::OkStatus();
  return ThroughDevice(values, [&](double* device_values) {
    return BroadcastOnDevice(device_values, values.size(), root);
  });
}

absl::Status NcclCommunicator::BroadcastBytes(std::string* bytes, int root) {
  RETURN_IF_ERROR(CheckRoot(root));
  // The length first (exact in fp64 for any real message), then the payload.
  double length[1] = {rank_ == root ? static_cast<double>(bytes->size()) : 0.0};
  RETURN_IF_ERROR(Broadcast(absl::MakeSpan(length), root));
  const size_t n = static_cast<size_t>(length[0]);
  if (rank_ != root) bytes->assign(n, '\0');
  if (n == 0) return absl::OkStatus();
  ASSIGN_OR_RETURN(void* staging, Scratch(kStaging, n));
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(staging, bytes->data(), n,
                                        cudaMemcpyHostToDevice, stream_),
                        "cudaMemcpyAsync")));
  RETURN_IF_ERROR(Remember(NcclStatus(
      ncclBroadcast(staging, staging, n, ncclChar, root, comm_, stream_),
      "ncclBroadcast(bytes)")));
  RETURN_IF_ERROR(Remember(
      CudaErrorToStatus(cudaMemcpyAsync(&(*bytes)[0], staging, n,
                                        cudaMemcpyDeviceToHost, stream_),
                        "cudaMemcpyAsync")));
  return Wait("ncclBroadcast(bytes)");
}

absl::Status NcclCommunicator::Barrier() {
  double token[1] = {0.0};
  return AllReduce(absl::MakeSpan(token), ReduceOp::kSum);
}

}  // namespace gradnorm
