#include "server/rpc/health_port.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {

absl::StatusOr<std::unique_ptr<HealthPort>> HealthPort::Start(
    const std::string& listen) {
  std::unique_ptr<HealthPort> health(new HealthPort());
  // The default health service (on for the main port, read by each builder
  // at its creation) would register Check a second time on this server,
  // which gRPC logs as an error.
  grpc::EnableDefaultHealthCheckService(false);
  grpc::ServerBuilder builder;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(),
                           &health->port_);
  builder.RegisterService(&health->service_);
  health->server_ = builder.BuildAndStart();
  if (health->server_ == nullptr || health->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve health on '", listen,
                     "' (address in use, or not a local address?)"));
  }
  return health;
}

HealthPort::~HealthPort() {
  if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now()));
}

}  // namespace server
}  // namespace gradnorm
