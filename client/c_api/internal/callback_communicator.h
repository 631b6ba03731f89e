// A Communicator whose collectives are the C ABI caller's callbacks
// (gn_communicator_callbacks): how a Python process supplies
// torch.distributed, or any other transport, to GetGradNorm and the clipper.
//
//   gn_communicator_callbacks callbacks = {...};
//   ASSIGN_OR_RETURN(std::unique_ptr<CallbackCommunicator> comm,
//                    CallbackCommunicator::Create(callbacks));
//   RETURN_IF_ERROR(comm->AllReduce(absl::MakeSpan(values), ReduceOp::kMax));
//
// The Communicator contract is kept here, not left to the callbacks: a MAX
// carries NaN as a separate flag (so a transport whose max drops NaN is
// fine), BroadcastBytes sends the length first, and after a failed callback
// every later call fails with FAILED_PRECONDITION naming the first error.
//
// Thread-safety: one thread at a time, as any Communicator.
#ifndef GRADNORM_CLIENT_C_API_INTERNAL_CALLBACK_COMMUNICATOR_H_
#define GRADNORM_CLIENT_C_API_INTERNAL_CALLBACK_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/c_api/gradnorm.h"
#include "client/communicator.h"

namespace gradnorm {
namespace c_api_internal {

class CallbackCommunicator : public Communicator {
 public:
  // INVALID_ARGUMENT for a missing callback, size < 1 or rank outside
  // [0, size).
  static absl::StatusOr<std::unique_ptr<CallbackCommunicator>> Create(
      const gn_communicator_callbacks& callbacks);

  // Calls the release callback, if any.
  ~CallbackCommunicator() override;

  CallbackCommunicator(const CallbackCommunicator&) = delete;
  CallbackCommunicator& operator=(const CallbackCommunicator&) = delete;

  int rank() const override { return callbacks_.rank; }
  int size() const override { return callbacks_.size; }
  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override;
  absl::Status Broadcast(absl::Span<double> values, int root) override;
  absl::Status BroadcastBytes(std::string* bytes, int root) override;
  absl::Status Barrier() override;

 private:
  explicit CallbackCommunicator(const gn_communicator_callbacks& callbacks)
      : callbacks_(callbacks) {}

  // The status of a callback's return code (and its message), remembered
  // as the first error when it is not OK.
  absl::Status Check(const char* what, gn_code code);
  absl::Status CheckRoot(int root) const;
  // FAILED_PRECONDITION after an earlier error.
  absl::Status Usable() const;

  const gn_communicator_callbacks callbacks_;
  absl::Status first_error_;
};

}  // namespace c_api_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_C_API_INTERNAL_CALLBACK_COMMUNICATOR_H_
