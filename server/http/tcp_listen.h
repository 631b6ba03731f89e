// "host:port" addresses of the coordinator's plain TCP ports (the HTTP port,
// and a replica's relay of it): splitting one, and listening on one.
//
//   ASSIGN_OR_RETURN(HostPort where, SplitHostPort("[::1]:9464"));  // "::1"
//   ASSIGN_OR_RETURN(ListeningSocket socket, ListenTcp("0.0.0.0:0"));
//   ... accept(socket.fd, ...) ... socket.port is the port chosen ...
//
// Thread-safety: pure functions.
#ifndef GRADNORM_SERVER_HTTP_TCP_LISTEN_H_
#define GRADNORM_SERVER_HTTP_TCP_LISTEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace gradnorm {
namespace server {

struct HostPort {
  std::string host;  // without the brackets of an IPv6 address
  std::string port;  // decimal, 0-65535
};

// INVALID_ARGUMENT naming the address when it is not host:port.
absl::StatusOr<HostPort> SplitHostPort(const std::string& address);

struct ListeningSocket {
  int fd = -1;   // the caller's to close
  int port = 0;  // the port bound (the chosen one for port 0)
};

// A listening TCP socket on `listen` (a name, an IPv4 address or a bracketed
// IPv6 one; port 0 picks a free port), close-on-exec, SO_REUSEADDR.
// INVALID_ARGUMENT for an address that does not resolve; UNAVAILABLE when no
// address of it can be bound.
absl::StatusOr<ListeningSocket> ListenTcp(const std::string& listen);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_TCP_LISTEN_H_
