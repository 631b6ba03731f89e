// The reactor of one Report call.
//
//   return NewReportReactor(aggregator, metrics, response, status, request,
//                           AggregatorDeadline(DeadlineOf(context), now));
//
// It answers from the Aggregator's callback (after the round's record is
// committed). A cancelled call is answered with CANCELLED at once; its report
// stays in the round (a retry of the same report rejoins it).
#ifndef GRADNORM_SERVER_RPC_REPORT_REACTOR_H_
#define GRADNORM_SERVER_RPC_REPORT_REACTOR_H_

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/core/aggregator.h"
#include "server/rpc/metrics.h"

namespace gradnorm {
namespace server {

// A reactor that answers with `rejected` when it is not OK; else it hands
// `request` to the Aggregator with `deadline` and answers with the outcome,
// serialized into `response`. gRPC owns it.
grpc::ServerUnaryReactor* NewReportReactor(Aggregator* aggregator,
                                           CoordinatorMetrics* metrics,
                                           grpc::ByteBuffer* response,
                                           const absl::Status& rejected,
                                           const v1::ReportRequest& request,
                                           absl::Time deadline);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_REPORT_REACTOR_H_
