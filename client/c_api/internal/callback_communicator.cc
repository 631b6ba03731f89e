#include "client/c_api/internal/callback_communicator.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/c_api/internal/last_error.h"
#include "common/status_macros.h"

namespace gradnorm {
namespace c_api_internal {

absl::StatusOr<std::unique_ptr<CallbackCommunicator>>
CallbackCommunicator::Create(const gn_communicator_callbacks& callbacks) {
  if (callbacks.all_reduce == nullptr || callbacks.broadcast == nullptr ||
      callbacks.broadcast_bytes == nullptr || callbacks.barrier == nullptr) {
    return absl::InvalidArgumentError(
        "a communicator callback is null; expected all_reduce, broadcast, "
        "broadcast_bytes and barrier");
  }
  if (callbacks.size < 1 || callbacks.rank < 0 ||
      callbacks.rank >= callbacks.size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "communicator rank ", callbacks.rank, " of size ", callbacks.size,
        "; expected size >= 1 and 0 <= rank < size"));
  }
  return std::unique_ptr<CallbackCommunicator>(
      new CallbackCommunicator(callbacks));
}

CallbackCommunicator::~CallbackCommunicator() {
  if (callbacks_.release != nullptr) callbacks_.release(callbacks_.user_data);
}

absl::Status CallbackCommunicator::Check(const char* what, gn_code code) {
  std::string message = TakeCallbackMessage();
  if (code == GN_OK) return absl::OkStatus();
  if (code < 0 || code > GN_UNAUTHENTICATED) {
    message =
        absl::StrCat("returned code ", code, " (not a gn_code; expected 0..16)",
                     message.empty() ? "" : ": ", message);
    code = GN_UNKNOWN;
  }
  first_error_ =
      absl::Status(static_cast<absl::StatusCode>(code),
                   absl::StrCat(what, " callback failed: ",
                                message.empty() ? "(no message)" : message));
  return first_error_;
}

absl::Status CallbackCommunicator::CheckRoot(int root) const {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "root ", root, " is out of range; expected [0, ", size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status CallbackCommunicator::Usable() const {
  if (first_error_.ok()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("communicator unusable after an earlier error: ",
                   first_error_.ToString()));
}

absl::Status CallbackCommunicator::AllReduce(absl::Span<double> values,
                                             ReduceOp op) {
  RETURN_IF_ERROR(Usable());
  if (values.empty()) return absl::OkStatus();
  void* user = callbacks_.user_data;
  if (op == ReduceOp::kSum) {
    return Check("all_reduce",
                 callbacks_.all_reduce(user, values.data(), values.size(),
                                       GN_REDUCE_SUM));
  }
  // [values with NaN as -inf | NaN flags]: one MAX gives both, and NaN wins.
  const size_t n = values.size();
  std::vector<double> both(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const bool nan = std::isnan(values[i]);
    both[i] = nan ? -std::numeric_limits<double>::infinity() : values[i];
    both[n + i] = nan ? 1.0 : 0.0;
  }
  RETURN_IF_ERROR(Check(
      "all_reduce",
      callbacks_.all_reduce(user, both.data(), both.size(), GN_REDUCE_MAX)));
  for (size_t i = 0; i < n; ++i) {
    values[i] =
        both[n + i] > 0.0 ? std::numeric_limits<double>::quiet_NaN() : both[i];
  }
  return absl::OkStatus();
}

absl::Status CallbackCommunicator::Broadcast(absl::Span<double> values,
                                             int root) {
  RETURN_IF_ERROR(Usable());
  RETURN_IF_ERROR(CheckRoot(root));
  if (values.empty()) return absl::OkStatus();
  return Check("broadcast",
               callbacks_.broadcast(callbacks_.user_data, values.data(),
                                    values.size(), root));
}

absl::Status CallbackCommunicator::BroadcastBytes(std::string* bytes,
                                                  int root) {
  RETURN_IF_ERROR(Usable());
  RETURN_IF_ERROR(CheckRoot(root));
  // Lengths up to 2^53 are exact in a double.
  double length[1] = {static_cast<double>(bytes->size())};
  RETURN_IF_ERROR(Check("broadcast", callbacks_.broadcast(callbacks_.user_data,
                                                          length, 1, root)));
  bytes->resize(static_cast<size_t>(length[0]));
  if (bytes->empty()) return absl::OkStatus();
  return Check("broadcast_bytes", callbacks_.broadcast_bytes(
                                      callbacks_.user_data,
                                      reinterpret_cast<uint8_t*>(&(*bytes)[0]),
                                      bytes->size(), root));
}

absl::Status CallbackCommunicator::Barrier() {
  RETURN_IF_ERROR(Usable());
  return Check("barrier", callbacks_.barrier(callbacks_.user_data));
}

}  // namespace c_api_internal
}  // namespace gradnorm
