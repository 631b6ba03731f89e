// The coordinator's plaintext, health-only gRPC port: grpc.health.v1 alone
// (health_service.h), for probes that cannot speak the main port's (mutual)
// TLS. The binary opens it once and keeps it through a standby's wait and a
// restart after a store failure (answering NOT_SERVING, and SERVING for
// gradnorm.v1.Process), and each CoordinatorServer it runs sets its status.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<HealthPort> health,
//                    HealthPort::Start("0.0.0.0:50052"));
//   options.health = health.get();      // the server sets SERVING and back
//
// Thread-safety: SetServing may be called from any thread.
#ifndef GRADNORM_SERVER_RPC_HEALTH_PORT_H_
#define GRADNORM_SERVER_RPC_HEALTH_PORT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "server/rpc/health_service.h"

namespace gradnorm {
namespace server {

class HealthPort {
 public:
  // Serves on `listen` (host:port; port 0 picks one), NOT_SERVING at first.
  // UNAVAILABLE when it cannot listen there.
  static absl::StatusOr<std::unique_ptr<HealthPort>> Start(
      const std::string& listen);
  // Stops at once.
  ~HealthPort();
  HealthPort(const HealthPort&) = delete;
  HealthPort& operator=(const HealthPort&) = delete;

  void SetServing(bool serving) { service_.SetServing(serving); }
  int port() const { return port_; }

 private:
  HealthPort() = default;

  HealthService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_HEALTH_PORT_H_
