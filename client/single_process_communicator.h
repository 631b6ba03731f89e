// A Communicator for a group of one: every collective is the identity. The
// default for a trainer that runs without data or tensor parallelism.
//
//   SingleProcessCommunicator solo;
//   absl::StatusOr<GradNormResult> norm = GetGradNorm(grads, solo, solo, 2.0);
//
// Thread-safety: stateless; safe from any thread.
#ifndef GRADNORM_CLIENT_SINGLE_PROCESS_COMMUNICATOR_H_
#define GRADNORM_CLIENT_SINGLE_PROCESS_COMMUNICATOR_H_

#include <string>

#include "client/communicator.h"

namespace gradnorm {

class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override;
  absl::Status Broadcast(absl::Span<double> values, int root) override;
  absl::Status BroadcastBytes(std::string* bytes, int root) override;
  absl::Status Barrier() override { return absl::OkStatus(); }
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_SINGLE_PROCESS_COMMUNICATOR_H_
