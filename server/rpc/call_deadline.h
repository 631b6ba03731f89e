// The deadlines of a call as the Aggregator sees them.
//
//   absl::Time deadline = AggregatorDeadline(DeadlineOf(context), absl::Now());
//
// The caller's deadline is passed on, shortened by a margin (kDeadlineMargin)
// so that the Aggregator's DEADLINE_EXCEEDED, which names the missing
// participants, reaches the caller before its own deadline fires.
#ifndef GRADNORM_SERVER_RPC_CALL_DEADLINE_H_
#define GRADNORM_SERVER_RPC_CALL_DEADLINE_H_

#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/callback_common.h"

namespace gradnorm {
namespace server {

// The most a deadline is shortened by (at most a fifth of the time the caller
// allowed is taken).
inline constexpr absl::Duration kDeadlineMargin = absl::Milliseconds(200);

// The call's gRPC deadline; absl::InfiniteFuture() for none.
absl::Time DeadlineOf(const grpc::CallbackServerContext* context);

// The deadline handed to the Aggregator for a call whose gRPC deadline is
// `deadline` at time `now`: absl::InfiniteFuture() for none, else `deadline`
// less min(kDeadlineMargin, (deadline - now) / 5).
absl::Time AggregatorDeadline(absl::Time deadline, absl::Time now);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_CALL_DEADLINE_H_
