#include "server/benchmark/echo_service.h"

namespace gradnorm {
namespace server {
namespace {

void Echo(const v1::ReportRequest& request, v1::RoundResult* result) {
  result->set_run_id(request.run_id());
  result->set_step(request.step());
  result->set_total_norm(request.partial());
  result->set_clip_coef(1.0);
  result->set_action(v1::ACTION_NONE);
  result->set_reason(v1::REASON_WITHIN_MAX_NORM);
  result->set_slowest_participant(request.participant());
}

class EchoStreamReactor final
    : public grpc::ServerBidiReactor<v1::ReportStreamRequest,
                                     v1::ReportStreamResponse> {
 public:
  EchoStreamReactor() { StartRead(&request_); }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    response_.Clear();
    response_.set_step(request_.report().step());
    Echo(request_.report(), response_.mutable_result());
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (ok) {
      StartRead(&request_);
    } else {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    }
  }

  void OnDone() override { delete this; }

 private:
  v1::ReportStreamRequest request_;
  v1::ReportStreamResponse response_;
};

}  // namespace

grpc::ServerUnaryReactor* EchoService::Report(
    grpc::CallbackServerContext* context, const v1::ReportRequest* request,
    v1::ReportResponse* response) {
  Echo(*request, response->mutable_result());
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<v1::ReportStreamRequest, v1::ReportStreamResponse>*
EchoService::ReportStream(grpc::CallbackServerContext* /*context*/) {
  return new EchoStreamReactor();
}

}  // namespace server
}  // namespace gradnorm
