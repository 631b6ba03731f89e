// A replica's port (--replica): several coordinators share one PostgreSQL
// database; the one holding it computes every round, and each of them
// listens where clients connect and forwards their calls there
// (forwarding_service.h), so a client may reach any replica, and fail over
// to any other, and every participant of a round still gets one answer.
//
//   ASSIGN_OR_RETURN(auto replica,
//                    ReplicaServer::Start({.listen = "0.0.0.0:50051",
//                                          .directory = directory.get()}));
//   ...
//   replica->Shutdown(absl::Seconds(2));
//
// grpc.health.v1 is answered here, not forwarded: SERVING for "" and
// "gradnorm.v1.Coordinator" while the directory knows a holder (SetServing,
// from the directory's on_known), NOT_SERVING otherwise; SERVING for
// "gradnorm.v1.Process" always. The binary's health port, when given, shows
// the same.
//
// Thread-safety: every method may be called from any thread.
#ifndef GRADNORM_SERVER_RPC_REPLICA_SERVER_H_
#define GRADNORM_SERVER_RPC_REPLICA_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/rpc/forwarding_service.h"
#include "server/rpc/health_port.h"
#include "server/rpc/health_service.h"
#include "server/rpc/tls.h"
#include "server/store/leader_directory.h"

namespace gradnorm {
namespace server {

struct ReplicaServerOptions {
  // host:port to listen on; port 0 picks a free port.
  std::string listen = "127.0.0.1:50051";
  // Not owned; must outlive the server.
  LeaderDirectory* directory = nullptr;
  // How long a call waits for a holder when none is known.
  absl::Duration max_wait = absl::Seconds(10);
  // Largest request accepted, bytes.
  int max_message_bytes = 64 * 1024;
  // The binary's health-only port, whose status follows SetServing; not
  // owned; may be null.
  HealthPort* health = nullptr;
  // The port's TLS (tls.h), as the coordinator's; all empty: plaintext.
  TlsFiles tls;
  // How forwarded calls reach the holder (ForwardingOptions).
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
  std::string peer_server_name;
};

// The credentials a replica reaches the holder's peer port with: plaintext
// when `tls` is empty; otherwise TLS trusting `peer_ca` (PEM file: the CA of
// the coordinators' certificate), presenting tls.cert and tls.key as the
// client certificate when tls.client_ca asks for one. INVALID_ARGUMENT when
// TLS is on without a peer CA; NOT_FOUND for an unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> PeerCredentials(
    const TlsFiles& tls, const std::string& peer_ca);

class ReplicaServer {
 public:
  // UNAVAILABLE when it cannot listen on `listen`; INVALID_ARGUMENT without
  // a directory.
  static absl::StatusOr<std::unique_ptr<ReplicaServer>> Start(
      ReplicaServerOptions options);
  ~ReplicaServer();
  ReplicaServer(const ReplicaServer&) = delete;
  ReplicaServer& operator=(const ReplicaServer&) = delete;

  int port() const { return port_; }
  // listen's host with port().
  const std::string& address() const { return address_; }
  // Health of "" and gradnorm.v1.Coordinator, here and on the health port.
  void SetServing(bool serving);
  // Calls forwarded so far.
  uint64_t forwarded() const { return forwarding_->forwarded(); }

  // NOT_SERVING, then calls get `grace` to finish before being cancelled.
  void Shutdown(absl::Duration grace);

 private:
  ReplicaServer() = default;

  ReplicaServerOptions options_;
  std::unique_ptr<ForwardingService> forwarding_;
  HealthService health_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_REPLICA_SERVER_H_
