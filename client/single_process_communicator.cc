#include "client/single_process_communicator.h"

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace {

absl::Status CheckRoot(int root) {
  if (root != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root,
                     " is out of range: expected 0 in a group of 1"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SingleProcessCommunicator::AllReduce(absl::Span<double> values,
                                                  ReduceOp op) {
  if (op != ReduceOp::kSum && op != ReduceOp::kMax) {
    return absl::InvalidArgumentError("unknown reduce op: expected sum or max");
  }
  return absl::OkStatus();
}

absl::Status SingleProcessCommunicator::Broadcast(absl::Span<double> values,
                                                  int root) {
  return CheckRoot(root);
}

absl::Status SingleProcessCommunicator::BroadcastBytes(std::string* bytes,
                                                       int root) {
  return CheckRoot(root);
}

}  // namespace gradnorm
