#include "server/http/http_connection.h"

#include <errno.h>
#include <sys/socket.h>

namespace gradnorm {
namespace server {
namespace {

class Plain : public HttpConnection {
 public:
  explicit Plain(int fd) : fd_(fd) {}
  ssize_t Read(char* data, size_t size) override {
    while (true) {
      const ssize_t n = recv(fd_, data, size, 0);
      if (n < 0 && errno == EINTR) continue;
      return n < 0 ? -1 : n;
    }
  }

  bool WriteAll(absl::string_view bytes) override {
    while (!bytes.empty()) {
      // MSG_NOSIGNAL: a client that left is an error here, not a SIGPIPE.
      const ssize_t n = send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

 private:
  const int fd_;
};

}  // namespace

std::unique_ptr<HttpConnection> PlainConnection(int fd) {
  return std::make_unique<Plain>(fd);
}

}  // namespace server
}  // namespace gradnorm
