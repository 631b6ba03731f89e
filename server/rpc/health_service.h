// grpc.health.v1.Health for the coordinator's plaintext, health-only port
// (health_port.h): Check answers SERVING or NOT_SERVING for the whole server
// ("") and for "gradnorm.v1.Coordinator", as the main port's health service
// does; SERVING for "gradnorm.v1.Process" whenever it answers at all (the
// process is up: serving, standing by or waiting for its database: what a
// liveness probe asks); NOT_FOUND for any other service. Watch is not offered
// (UNIMPLEMENTED): probes call Check.
//
//   HealthService health;
//   builder.RegisterService(&health);
//   health.SetServing(true);   // and false when shutting down
//
// Thread-safety: SetServing and Check may run concurrently.
#ifndef GRADNORM_SERVER_RPC_HEALTH_SERVICE_H_
#define GRADNORM_SERVER_RPC_HEALTH_SERVICE_H_

#include <atomic>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace gradnorm {
namespace server {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  // The service Check reports besides the whole server ("").
  static constexpr char kCoordinatorService[] = "gradnorm.v1.Coordinator";
  // The service that is SERVING while the process answers.
  static constexpr char kProcessService[] = "gradnorm.v1.Process";

  void SetServing(bool serving) { serving_.store(serving); }

  grpc::ServerUnaryReactor* Check(
      grpc::CallbackServerContext* context,
      const grpc::health::v1::HealthCheckRequest* request,
      grpc::health::v1::HealthCheckResponse* response) override;

 private:
  std::atomic<bool> serving_{false};
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_HEALTH_SERVICE_H_
