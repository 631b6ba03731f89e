#include "server/rpc/health_service.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {

grpc::ServerUnaryReactor* HealthService::Check(
    grpc::CallbackServerContext* context,
    const grpc::health::v1::HealthCheckRequest* request,
    grpc::health::v1::HealthCheckResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const std::string& service = request->service();
  const bool process = service == kProcessService;
  if (!service.empty() && service != kCoordinatorService && !process) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("unknown service '", service,
                     "'; expected '' (the server), '", kCoordinatorService,
                     "' or '", kProcessService, "'")));
    return reactor;
  }
  response->set_status(
      process || serving_.load()
          ? grpc::health::v1::HealthCheckResponse::SERVING
          : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
