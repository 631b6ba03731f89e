#include "server/http/tcp_listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {

absl::StatusOr<HostPort> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", address,
                     "' is invalid; expected host:port (port 0: any "
                     "free one)"));
  }
  HostPort split{address.substr(0, colon), address.substr(colon + 1)};
  if (split.host.size() >= 2 && split.host.front() == '[' &&
      split.host.back() == ']') {
    split.host = split.host.substr(1, split.host.size() - 2);
  }
  return split;
}

absl::StatusOr<ListeningSocket> ListenTcp(const std::string& listen) {
  absl::StatusOr<HostPort> where = SplitHostPort(listen);
  if (!where.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address '", listen,
        "' is invalid; expected host:port (port 0: any free one)"));
  }
  addrinfo hints;
  std::memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* addresses = nullptr;
  const int found =
      getaddrinfo(where->host.c_str(), where->port.c_str(), &hints, &addresses);
  if (found != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("HTTP listen address '", listen,
                     "' is invalid: ", gai_strerror(found)));
  }
  std::string why = "no address";
  for (addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      why = std::strerror(errno);
      continue;
    }
    const int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      why = std::strerror(errno);
      close(fd);
      continue;
    }
    sockaddr_storage bound;
    socklen_t size = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &size);
    const int port =
        ntohs(bound.ss_family == AF_INET6
                  ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                  : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
    freeaddrinfo(addresses);
    return ListeningSocket{fd, port};
  }
  freeaddrinfo(addresses);
  return absl::UnavailableError(
      absl::StrCat("cannot serve HTTP on ", listen, ": ", why));
}

}  // namespace server
}  // namespace gradnorm
