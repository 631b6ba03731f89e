// The HTTP server's TLS (OpenSSL): a server context from PEM files, and the
// handshake of each accepted socket.
//
//   ASSIGN_OR_RETURN(auto tls, TlsServerContext::Create(
//       "server.crt", "server.key", /*client_ca=*/""));
//   absl::StatusOr<std::unique_ptr<HttpConnection>> c = tls->Accept(fd);
//
// With a client CA the handshake requires a client certificate that chains
// to it (mutual TLS). TLS 1.2 at least.
//
// Thread-safety: Accept may be called from any number of threads.
#ifndef GRADNORM_SERVER_HTTP_HTTP_TLS_H_
#define GRADNORM_SERVER_HTTP_HTTP_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/http/http_connection.h"

struct ssl_ctx_st;

namespace gradnorm {
namespace server {

class TlsServerContext {
 public:
  // INVALID_ARGUMENT naming the file when a certificate chain, key or CA
  // cannot be read or used, or when the key is not the certificate's.
  static absl::StatusOr<std::unique_ptr<TlsServerContext>> Create(
      const std::string& cert, const std::string& key,
      const std::string& client_ca);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // The TLS handshake on accepted socket `fd` (which stays the caller's to
  // close, after the connection). UNAVAILABLE with OpenSSL's reason when the
  // handshake fails (a plaintext client, an untrusted client certificate).
  absl::StatusOr<std::unique_ptr<HttpConnection>> Accept(int fd) const;

 private:
  explicit TlsServerContext(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* const ctx_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_TLS_H_
