// One accepted client connection of the HTTP server: bytes in and out over a
// socket, in plaintext or through TLS (http_tls.h). The socket stays the
// caller's to close, after the connection is gone.
//
//   std::unique_ptr<HttpConnection> c = PlainConnection(fd);
//   char buf[4096];
//   ssize_t n = c->Read(buf, sizeof(buf));  // 0: end, -1: error or timeout
//   c->WriteAll("HTTP/1.1 200 OK\r\n...");
//
// Thread-safety: one thread at a time; the socket may be shut down from
// another thread (shutdown(2)) to end a blocked Read or Write.
#ifndef GRADNORM_SERVER_HTTP_HTTP_CONNECTION_H_
#define GRADNORM_SERVER_HTTP_HTTP_CONNECTION_H_

#include <sys/types.h>

#include <memory>

#include "absl/strings/string_view.h"

namespace gradnorm {
namespace server {

class HttpConnection {
 public:
  virtual ~HttpConnection() = default;
  // Up to `size` bytes into `data`: their count, 0 at the end of the stream,
  // -1 on an error or the socket's receive timeout.
  virtual ssize_t Read(char* data, size_t size) = 0;
  // All of `bytes`, or false (the client left, or the send timeout).
  virtual bool WriteAll(absl::string_view bytes) = 0;
};

// A plaintext connection over `fd`.
std::unique_ptr<HttpConnection> PlainConnection(int fd);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_CONNECTION_H_
