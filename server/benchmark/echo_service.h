// A bare gradnorm.v1.Coordinator that answers Report, and each report on a
// ReportStream, at once, echoing the request into a RoundResult: no
// aggregation, no waiting, no store. It is the peer the coordinator benchmark
// measures against (same messages, same transport, same callback API), so the
// ratio isolates the coordinator's own cost. Every other RPC is
// UNIMPLEMENTED.
//
//   EchoService echo;
//   builder.RegisterService(&echo);
//
// Thread-safety: stateless; safe for concurrent calls.
#ifndef GRADNORM_SERVER_BENCHMARK_ECHO_SERVICE_H_
#define GRADNORM_SERVER_BENCHMARK_ECHO_SERVICE_H_

#include "gradnorm/v1/coordinator.grpc.pb.h"

namespace gradnorm {
namespace server {

class EchoService final : public v1::Coordinator::CallbackService {
 public:
  // Answers with run_id and step copied, total_norm = partial, clip_coef 1,
  // ACTION_NONE, slowest_participant = participant.
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* context,
                                   const v1::ReportRequest* request,
                                   v1::ReportResponse* response) override;

  // One answer per request, in order, until the client half-closes.
  grpc::ServerBidiReactor<v1::ReportStreamRequest, v1::ReportStreamResponse>*
  ReportStream(grpc::CallbackServerContext* context) override;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_BENCHMARK_ECHO_SERVICE_H_
