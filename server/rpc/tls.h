// Server transport credentials from PEM files: plaintext, TLS, or mutual TLS.
//
//   TlsFiles files{.cert = "server.pem", .key = "server.key",
//                  .client_ca = "clients-ca.pem"};  // client_ca: mTLS
//   ASSIGN_OR_RETURN(auto creds, MakeServerCredentials(files));
//   builder.AddListeningPort("0.0.0.0:50051", creds);
//
// With no files at all the server listens in plaintext (local development).
// With cert and key it serves TLS. With client_ca as well it requires every
// client to present a certificate that chains to that CA, and refuses the
// handshake otherwise
// (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). Thread-safe:
// pure function.
#ifndef GRADNORM_SERVER_RPC_TLS_H_
#define GRADNORM_SERVER_RPC_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace gradnorm {
namespace server {

struct TlsFiles {
  std::string cert;       // PEM certificate chain of the server.
  std::string key;        // PEM private key of `cert`.
  std::string client_ca;  // PEM CA bundle; non-empty turns on mutual TLS.

  bool enabled() const {
    return !cert.empty() || !key.empty() || !client_ca.empty();
  }
};

// INVALID_ARGUMENT when only one of cert and key is given, or client_ca
// without them; NOT_FOUND when a file cannot be read; INVALID_ARGUMENT when a
// file holds no PEM block. (gRPC checks the PEM contents themselves when the
// server starts, which then fails to bind.)
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files);

// Reads a whole file. NOT_FOUND naming `what` and `path` when it cannot.
absl::StatusOr<std::string> ReadPemFile(const std::string& path,
                                        const std::string& what);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_TLS_H_
