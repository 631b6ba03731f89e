#include "server/echo_service.h"

namespace gradnorm {
namespace server {

grpc::ServerUnaryReactor* EchoService::Report(grpc::CallbackServerContext* context,
                                              const v1::ReportRequest* request,
                                              v1::ReportResponse* response) {
  v1::RoundResult* result = response->mutable_result();
  result->set_run_id(request->run_id());
  result->set_step(request->step());
  result->set_total_norm(request->partial());
  result->set_clip_coef(1.0);
  result->set_action(v1::ACTION_NONE);
  result->set_reason(v1::REASON_WITHIN_MAX_NORM);
  result->set_slowest_participant(request->participant());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
