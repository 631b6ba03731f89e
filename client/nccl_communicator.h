// A Communicator over NCCL, for trainers whose gradients live on GPUs.
// Compiled only in builds with CUDA (see //bazel:cuda.bzl).
//
// Either wraps the trainer's own ncclComm_t and stream (e.g. the process
// group's), which stay the caller's, or creates and owns a communicator from a
// ncclUniqueId that rank 0 made and shared (ncclGetUniqueId):
//
//   ncclUniqueId id = ...;  // ncclGetUniqueId on rank 0, sent to the others
//   ASSIGN_OR_RETURN(std::unique_ptr<NcclCommunicator> tp,
//                    NcclCommunicator::CreateFromUniqueId(id, tp_rank, tp_size,
//                                                         /*device=*/local_rank));
//   RETURN_IF_ERROR(tp->AllReduce(absl::MakeSpan(partials), ReduceOp::kSum));
//
// The calls stage host values through a small device buffer. kMax keeps NaN
// (NCCL's own max may drop it): a NaN flag per value is max-reduced along with
// the values.
//
// Every call waits for its collective to finish, polling the stream and
// ncclCommGetAsyncError; when the collective has not finished within
// `timeout`, or NCCL reports an asynchronous error (a peer died), the
// communicator is aborted (ncclCommAbort: also a wrapped one, which the caller
// must then not use) and the call fails with DEADLINE_EXCEEDED or UNAVAILABLE.
// Communicators it creates are non-blocking, so creation is bounded too.
//
// Thread-safety: one thread at a time per object.
#ifndef GRADNORM_CLIENT_NCCL_COMMUNICATOR_H_
#define GRADNORM_CLIENT_NCCL_COMMUNICATOR_H_

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/communicator.h"

namespace gradnorm {

struct NcclCommunicatorOptions {
  // Bound on creation and on each collective.
  absl::Duration timeout = absl::Seconds(60);
};

class NcclCommunicator final : public Communicator {
 public:
  // Wraps a caller-owned communicator and stream (not destroyed here).
  // INVALID_ARGUMENT for a null comm or a bad timeout; INTERNAL when NCCL
  // cannot describe the communicator.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Wrap(
      ncclComm_t comm, cudaStream_t stream,
      const NcclCommunicatorOptions& options = {});

  // Joins the communicator `id` as `rank` of `size` on CUDA device `device`,
  // with its own stream. Blocks until all ranks joined or the timeout.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> CreateFromUniqueId(
      const ncclUniqueId& id, int rank, int size, int device,
      const NcclCommunicatorOptions& options = {});

  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override;
  absl::Status Broadcast(absl::Span<double> values, int root) override;
  absl::Status BroadcastBytes(std::string* bytes, int root) override;
  absl::Status Barrier() override;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }

 private:
  // `count` fp64 values in device memory, reduced in place (kMax keeps NaN).
  absl::Status AllReduceOnDevice(double* values, size_t count, ReduceOp op);
  // `count` fp64 values in device memory, the root's copied to every rank.
  absl::Status BroadcastOnDevice(double* values, size_t count, int root);

  NcclCommunicator(ncclComm_t comm, cudaStream_t stream, bool owns_comm,
                   bool owns_stream, int rank, int size, int device,
                   absl::Duration timeout);

  absl::Status Begin() const;
  // Waits until the stream is idle, aborting on an async error or timeout.
  absl::Status Wait(absl::string_view call);
  // A device buffer of at least `bytes` (reused between calls).
  absl::StatusOr<void*> Scratch(int which, size_t bytes);
  // Copies host `values` to device staging, runs `collective` on it, copies
  // the result back and waits.
  absl::Status ThroughDevice(
      absl::Span<double> values,
      const std::function<absl::Status(double* device_values)>& collective);
  absl::Status Remember(absl::Status status);
  absl::Status CheckRoot(int root) const;

  ncclComm_t comm_;
  cudaStream_t stream_;
  const bool owns_comm_;
  const bool owns_stream_;
  const int rank_;
  const int size_;
  const int device_;
  const absl::Duration timeout_;
  bool aborted_ = false;
  void* scratch_[2] = {nullptr, nullptr};
  size_t scratch_bytes_[2] = {0, 0};
  absl::Status broken_;
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_NCCL_COMMUNICATOR_H_
