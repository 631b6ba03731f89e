#include "server/rpc/call_deadline.h"

#include <chrono>

namespace gradnorm {
namespace server {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

absl::Time AggregatorDeadline(absl::Time deadline, absl::Time now) {
  if (deadline == absl::InfiniteFuture()) return deadline;
  absl::Duration margin = (deadline - now) / 5;
  if (margin > kDeadlineMargin) {
    margin = kDeadlineMargin;
  }
  if (margin < absl::ZeroDuration()) margin = absl::ZeroDuration();
  return deadline - margin;
}

}  // namespace server
}  // namespace gradnorm
