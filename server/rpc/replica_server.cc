#include "server/rpc/replica_server.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/rpc/server_settings.h"

namespace gradnorm {
namespace server {

absl::StatusOr<std::unique_ptr<ReplicaServer>> ReplicaServer::Start(
    ReplicaServerOptions options) {
  if (options.directory == nullptr) {
    return absl::InvalidArgumentError(
        "a replica needs a leader directory (where the coordinator holding "
        "the database serves)");
  }
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "replica listen address '", options.listen, "', expected host:port"));
  }
  std::unique_ptr<ReplicaServer> server(new ReplicaServer());
  server->options_ = options;
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                   MakeServerCredentials(options.tls));
  server->forwarding_ = std::make_unique<ForwardingService>(
      ForwardingOptions{.directory = options.directory,
                        .max_wait = options.max_wait,
                        .credentials = options.peer_credentials,
                        .server_name = options.peer_server_name});
  // The default health service (on for the coordinator's port, read by each
  // builder as it is made) would take the place of this port's own.
  grpc::EnableDefaultHealthCheckService(false);
  grpc::ServerBuilder builder;
  ApplyServerSettings(builder, options.max_message_bytes);
  builder.AddListeningPort(options.listen, credentials, &server->port_);
  // Health is answered here; every other method is forwarded.
  builder.RegisterService(&server->health_);
  builder.RegisterCallbackGenericService(server->forwarding_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve on '", options.listen,
                     "' (address in use, or not a local address?)"));
  }
  server->address_ =
      absl::StrCat(options.listen.substr(0, colon), ":", server->port_);
  server->SetServing(options.directory->Known());
  return server;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> PeerCredentials(
    const TlsFiles& tls, const std::string& peer_ca) {
  if (tls.cert.empty()) return grpc::InsecureChannelCredentials();
  if (peer_ca.empty()) {
    return absl::InvalidArgumentError(
        "replicas serving TLS reach each other over TLS: expected the PEM CA "
        "of the coordinators' certificate (--peer_tls_ca)");
  }
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile(peer_ca, "--peer_tls_ca"));
  if (!tls.client_ca.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPemFile(tls.cert, "--tls_cert"));
    ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPemFile(tls.key, "--tls_key"));
  }
  return grpc::SslCredentials(ssl);
}

ReplicaServer::~ReplicaServer() { Shutdown(absl::ZeroDuration()); }

void ReplicaServer::SetServing(bool serving) {
  health_.SetServing(serving);
  if (options_.health != nullptr) options_.health->SetServing(serving);
}

void ReplicaServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
  server_->Wait();
  server_.reset();
}

}  // namespace server
}  // namespace gradnorm
