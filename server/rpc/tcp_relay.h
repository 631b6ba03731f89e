// A replica's HTTP port (--replica with --http_listen): every TCP connection
// is relayed, bytes unchanged, to the HTTP port of the coordinator holding
// the database (its advertised "http=" address, leader_directory.h), so the
// dashboard, the JSON API, event streams and /metrics answer on any replica,
// TLS included (the holder terminates it). A connection waits for a holder
// up to `max_wait`, and is closed without an answer when none is known or it
// cannot be reached.
//
//   ASSIGN_OR_RETURN(auto relay, TcpRelay::Start({.listen = "0.0.0.0:9464",
//                                                 .directory = directory}));
//
// One thread per connection, at most `max_connections` at once (the next
// ones are closed at once), relaying both directions in turn: fine for HTTP,
// where one side waits for the other.
//
// Thread-safety: port() from any thread; destroy from one.
#ifndef GRADNORM_SERVER_RPC_TCP_RELAY_H_
#define GRADNORM_SERVER_RPC_TCP_RELAY_H_

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/leader_directory.h"

namespace gradnorm {
namespace server {

struct TcpRelayOptions {
  // host:port (IPv4 or a name); port 0 picks a free port.
  std::string listen = "127.0.0.1:0";
  // Not owned; must outlive the relay.
  LeaderDirectory* directory = nullptr;
  absl::Duration max_wait = absl::Seconds(10);
  int max_connections = 64;
};

class TcpRelay {
 public:
  // UNAVAILABLE when it cannot listen; INVALID_ARGUMENT for a bad address
  // or no directory.
  static absl::StatusOr<std::unique_ptr<TcpRelay>> Start(
      TcpRelayOptions options);
  // Closes the port and every relayed connection.
  ~TcpRelay();
  TcpRelay(const TcpRelay&) = delete;
  TcpRelay& operator=(const TcpRelay&) = delete;

  int port() const { return port_; }
  // Connections relayed to a holder so far.
  uint64_t relayed() const { return relayed_.load(); }

 private:
  TcpRelay() = default;
  void AcceptLoop();
  void Serve(int client);
  // Connects to host:port within `deadline`; -1 when it cannot, with
  // *refused set when nothing listens there (refused, or no route).
  static int Connect(const std::string& address, absl::Time deadline,
                     bool* refused);

  TcpRelayOptions options_;
  int listen_fd_ = -1;
  int wake_read_ = -1;
  int wake_write_ = -1;
  int port_ = 0;
  std::atomic<uint64_t> relayed_{0};
  std::thread accept_thread_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Open sockets (both ends of every connection), shut down on stop.
  std::set<int> sockets_ ABSL_GUARDED_BY(mu_);
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_TCP_RELAY_H_
