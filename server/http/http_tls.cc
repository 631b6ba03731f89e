#include "server/http/http_tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {
namespace {

// OpenSSL's oldest queued error as text (the queue is then cleared).
std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error recorded";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

class TlsConnection : public HttpConnection {
 public:
  explicit TlsConnection(SSL* ssl) : ssl_(ssl) {}
  ~TlsConnection() override {
    SSL_shutdown(ssl_);  // Best effort close_notify.
    SSL_free(ssl_);      // Leaves the socket open (BIO_NOCLOSE).
  }

  ssize_t Read(char* data, size_t size) override {
    size_t n = 0;
    const int ok = SSL_read_ex(ssl_, data, size, &n);
    if (ok == 1) return static_cast<ssize_t>(n);
    const int error = SSL_get_error(ssl_, ok);
    ERR_clear_error();
    return error == SSL_ERROR_ZERO_RETURN ? 0 : -1;
  }

  bool WriteAll(absl::string_view bytes) override {
    while (!bytes.empty()) {
      size_t n = 0;
      if (SSL_write_ex(ssl_, bytes.data(), bytes.size(), &n) != 1) {
        ERR_clear_error();
        return false;
      }
      bytes.remove_prefix(n);
    }
    return true;
  }

 private:
  SSL* const ssl_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<TlsServerContext>> TlsServerContext::Create(
    const std::string& cert, const std::string& key,
    const std::string& client_ca) {
  if (cert.empty() || key.empty()) {
    return absl::InvalidArgumentError(
        "HTTPS needs both a certificate and its key (and, for mutual TLS, a "
        "client CA as well); got only part of them");
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create a TLS context: ", OpenSslError()));
  }
  std::unique_ptr<TlsServerContext> context(new TlsServerContext(ctx));
  auto fail = [](const std::string& what, const std::string& path) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot use ", what, " '", path, "': ", OpenSslError()));
  };
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return fail("the PEM certificate chain", cert);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    return fail("the PEM private key of the certificate", key);
  }
  if (!client_ca.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, client_ca.c_str(), nullptr) != 1) {
      return fail("the PEM client CA", client_ca);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       nullptr);
  }
  return context;
}

TlsServerContext::~TlsServerContext() { SSL_CTX_free(ctx_); }

absl::StatusOr<std::unique_ptr<HttpConnection>> TlsServerContext::Accept(
    int fd) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return absl::InternalError(
        absl::StrCat("cannot start TLS on a connection: ", OpenSslError()));
  }
  if (SSL_accept(ssl) != 1) {
    const std::string why = OpenSslError();
    SSL_free(ssl);
    return absl::UnavailableError(
        absl::StrCat("TLS handshake with a client failed: ", why));
  }
  return std::unique_ptr<HttpConnection>(new TlsConnection(ssl));
}

}  // namespace server
}  // namespace gradnorm
