#include "server/rpc/tcp_relay.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/http/tcp_listen.h"

namespace gradnorm {
namespace server {
namespace {

int PollMillis(absl::Time deadline) {
  const int64_t ms = absl::ToInt64Milliseconds(deadline - absl::Now());
  return static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(ms, 1000)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpRelay>> TcpRelay::Start(
    TcpRelayOptions options) {
  if (options.directory == nullptr) {
    return absl::InvalidArgumentError("a relay needs a leader directory");
  }
  ASSIGN_OR_RETURN(ListeningSocket listening, ListenTcp(options.listen));
  std::unique_ptr<TcpRelay> relay(new TcpRelay());
  relay->options_ = std::move(options);
  relay->listen_fd_ = listening.fd;
  relay->port_ = listening.port;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::InternalError("pipe2 failed");
  }
  relay->wake_read_ = fds[0];
  relay->wake_write_ = fds[1];
  TcpRelay* raw = relay.get();
  relay->accept_thread_ = std::thread([raw] { raw->AcceptLoop(); });
  return relay;
}

TcpRelay::~TcpRelay() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : sockets_) shutdown(fd, SHUT_RDWR);
  }
  const char byte = 0;
  (void)!write(wake_write_, &byte, 1);
  if (accept_thread_.joinable()) accept_thread_.join();
  // Connections end once their sockets are shut down.
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* connections) { return *connections == 0; }, &connections_));
  close(listen_fd_);
  close(wake_read_);
  close(wake_write_);
}

void TcpRelay::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_read_, POLLIN, 0}};
    poll(fds, 2, -1);
    if ((fds[1].revents & POLLIN) != 0) return;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      // Out of descriptors or memory: the connection stays queued, so back
      // off instead of polling it again at once.
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        absl::SleepFor(absl::Milliseconds(100));
      }
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || connections_ >= options_.max_connections) {
        close(client);
        continue;
      }
      ++connections_;
      sockets_.insert(client);
    }
    std::thread([this, client] { Serve(client); }).detach();
  }
}

int TcpRelay::Connect(const std::string& address, absl::Time deadline,
                      bool* refused) {
  *refused = false;
  absl::StatusOr<HostPort> where = SplitHostPort(address);
  if (!where.ok()) return -1;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(where->host.c_str(), where->port.c_str(), &hints, &found) !=
      0) {
    return -1;
  }
  int connected = -1;
  for (addrinfo* a = found; a != nullptr && connected < 0; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    int error = 0;
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        // Until connected, refused or the deadline (a lost SYN is resent).
        pollfd p = {fd, POLLOUT, 0};
        int ready = 0;
        while ((ready = poll(&p, 1, PollMillis(deadline))) == 0 &&
               absl::Now() < deadline) {
        }
        socklen_t length = sizeof(error);
        error = ETIMEDOUT;
        if (ready == 1) getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length);
      }
    }
    if (error == 0) {
      connected = fd;
    } else {
      *refused = *refused || error == ECONNREFUSED || error == EHOSTUNREACH ||
                 error == ENETUNREACH;
      close(fd);
    }
  }
  freeaddrinfo(found);
  if (connected >= 0) {
    fcntl(connected, F_SETFL, fcntl(connected, F_GETFL) & ~O_NONBLOCK);
    const int one = 1;
    setsockopt(connected, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  return connected;
}

void TcpRelay::Serve(int client) {
  // Where the holder serves HTTP: wait for one (the directory answers; the
  // answer may come after this connection gave up, so it owns its state).
  struct Answer {
    absl::Notification found;
    absl::StatusOr<std::string> advertised;
  };
  auto answer = std::make_shared<Answer>();
  options_.directory->Lookup(absl::Now() + options_.max_wait,
                             [answer](absl::StatusOr<std::string> result) {
                               answer->advertised = std::move(result);
                               answer->found.Notify();
                             });
  // The directory answers by the deadline; this connection does not wait
  // much longer even if it cannot (its database unreachable).
  const absl::Time give_up = absl::Now() + options_.max_wait + absl::Seconds(1);
  while (
      !answer->found.WaitForNotificationWithTimeout(absl::Milliseconds(100))) {
    absl::MutexLock lock(&mu_);
    if (stopping_ || absl::Now() > give_up) break;
  }
  const absl::StatusOr<std::string> advertised =
      answer->found.HasBeenNotified()
          ? answer->advertised
          : absl::StatusOr<std::string>(absl::CancelledError("stopping"));
  int holder = -1;
  if (advertised.ok()) {
    const std::string http = ParseAdvertised(*advertised).http;
    if (!http.empty()) {
      bool refused = false;
      holder = Connect(http, absl::Now() + absl::Seconds(5), &refused);
      // Nothing listens there any more: the holder is gone. (A timeout
      // proves nothing: the network may be slow.)
      if (holder < 0 && refused) options_.directory->Forget(*advertised);
    }
  }
  bool stopping;
  {
    absl::MutexLock lock(&mu_);
    stopping = stopping_;
    if (holder >= 0) sockets_.insert(holder);
  }
  if (holder >= 0 && !stopping) {
    ++relayed_;
    // Both directions until each has ended: an end of one side is passed on
    // as a half-close of the other.
    char buffer[16384];
    bool open[2] = {true, true};  // client->holder, holder->client
    const int from[2] = {client, holder};
    const int to[2] = {holder, client};
    while (open[0] || open[1]) {
      pollfd fds[2] = {{open[0] ? client : -1, POLLIN, 0},
                       {open[1] ? holder : -1, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
      bool failed = false;
      for (int d = 0; d < 2; ++d) {
        if (!open[d] || (fds[d].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
          continue;
        }
        const ssize_t n = read(from[d], buffer, sizeof(buffer));
        if (n <= 0) {
          open[d] = false;
          shutdown(to[d], SHUT_WR);
          if (n < 0) failed = true;
          continue;
        }
        for (ssize_t sent = 0; sent < n;) {
          const ssize_t w = send(to[d], buffer + sent, n - sent, MSG_NOSIGNAL);
          if (w <= 0) {
            failed = true;
            break;
          }
          sent += w;
        }
      }
      if (failed) break;
    }
  }
  absl::MutexLock lock(&mu_);
  sockets_.erase(client);
  close(client);
  if (holder >= 0) {
    sockets_.erase(holder);
    close(holder);
  }
  --connections_;
}

}  // namespace server
}  // namespace gradnorm
