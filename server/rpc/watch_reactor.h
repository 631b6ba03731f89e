// The reactor of one WatchRun call: streams a RoundWatch, one write in flight
// at a time, and ends with OK once a finished run's last round was written.
//
//   return NewWatchReactor(aggregator, status, request);
#ifndef GRADNORM_SERVER_RPC_WATCH_REACTOR_H_
#define GRADNORM_SERVER_RPC_WATCH_REACTOR_H_

#include "absl/status/status.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/core/aggregator.h"

namespace gradnorm {
namespace server {

// A reactor that ends the stream with `rejected` when it is not OK, else
// watches `request`'s run. gRPC owns it; the RoundWatch goes with it, so the
// Aggregator must outlive the server's Shutdown (which waits for every call).
grpc::ServerWriteReactor<grpc::ByteBuffer>* NewWatchReactor(
    Aggregator* aggregator, const absl::Status& rejected,
    const v1::WatchRunRequest& request);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_WATCH_REACTOR_H_
