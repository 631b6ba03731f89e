#include "server/http/http_server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http/http_error.h"
#include "server/http/http_request_parser.h"
#include "server/http/tcp_listen.h"

namespace gradnorm {
namespace server {
namespace {

// Accepted connections waiting for a worker beyond this are closed at once.
constexpr size_t kMaxPending = 1024;

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return status < 500 ? "Error" : "Internal Server Error";
  }
}

// The response's head: status line, content type, `content_length` when the
// body is whole, `more` header lines, then the response's own extra ones.
std::string Head(const HttpResponse& response,
                 std::optional<size_t> content_length, absl::string_view more) {
  return absl::StrCat(
      "HTTP/1.1 ", response.status, " ", Reason(response.status),
      "\r\nContent-Type: ", response.content_type, "\r\n",
      content_length.has_value()
          ? absl::StrCat("Content-Length: ", *content_length, "\r\n")
          : "",
      more, response.extra_headers, "Connection: close\r\n\r\n");
}

// Adapts an HttpConnection to the stream's writer.
class ConnectionWriter : public ResponseWriter {
 public:
  explicit ConnectionWriter(HttpConnection& connection)
      : connection_(connection) {}
  bool Write(absl::string_view bytes) override {
    return connection_.WriteAll(bytes);
  }

 private:
  HttpConnection& connection_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, Handler handler) {
  if (options.threads < 1 || options.max_streams < 0 ||
      options.max_streams >= options.threads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP threads ", options.threads, " and max_streams ",
        options.max_streams,
        " are invalid; expected threads >= 1 and max_streams from 0 to "
        "threads - 1: each stream holds a worker thread"));
  }
  auto server =
      std::unique_ptr<HttpServer>(new HttpServer(std::move(handler), options));
  if (!options.tls_cert.empty() || !options.tls_key.empty() ||
      !options.tls_client_ca.empty()) {
    absl::StatusOr<std::unique_ptr<TlsServerContext>> tls =
        TlsServerContext::Create(options.tls_cert, options.tls_key,
                                 options.tls_client_ca);
    if (!tls.ok()) return tls.status();
    server->tls_ = *std::move(tls);
  }
  absl::StatusOr<ListeningSocket> listening = ListenTcp(options.listen);
  if (!listening.ok()) return listening.status();
  server->listen_fd_ = listening->fd;
  server->port_ = listening->port;
  if (pipe2(server->wake_fds_, O_CLOEXEC) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot create a pipe: ", std::strerror(errno)));
  }
  // A client that leaves mid-write must not kill the process: OpenSSL
  // writes with write(2), which raises SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  server->acceptor_ = std::thread([s = server.get()] { s->AcceptLoop(); });
  for (int i = 0; i < options.threads; ++i) {
    server->workers_.emplace_back([s = server.get()] { s->WorkLoop(); });
  }
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (!acceptor_.joinable()) {  // Stopped, or Start failed half-way.
    if (listen_fd_ >= 0) close(listen_fd_);
    listen_fd_ = -1;
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (StreamSignal* signal : streams_) signal->Cancel();
    // Streams write their end event before their connection is cut; one
    // stuck writing to a client that reads nothing is cut off.
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return streams_.empty();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ended), absl::Seconds(5));
  }
  const char byte = 0;
  (void)!write(wake_fds_[1], &byte, 1);
  acceptor_.join();
  close(listen_fd_);
  listen_fd_ = -1;
  {
    absl::MutexLock lock(&mu_);
    // Ends reads and writes in progress; their workers then close the fds.
    for (int fd : serving_) shutdown(fd, SHUT_RDWR);
    for (int fd : pending_) close(fd);
    pending_.clear();
  }
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  close(wake_fds_[0]);
  close(wake_fds_[1]);
}

void HttpServer::AcceptLoop() {
  pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fds_[0], POLLIN, 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // Stop.
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // The client left already, or out of fds.
    absl::MutexLock lock(&mu_);
    if (stopping_ || pending_.size() >= kMaxPending) {
      close(fd);
      continue;
    }
    pending_.push_back(fd);
  }
}

void HttpServer::WorkLoop() {
  while (true) {
    int fd = -1;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !pending_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (pending_.empty()) return;  // Stopping.
      fd = pending_.front();
      pending_.pop_front();
      serving_.insert(fd);
    }
    Serve(fd);
    {
      // Out of serving_ before close: Stop never shuts down a reused fd.
      absl::MutexLock lock(&mu_);
      serving_.erase(fd);
    }
    close(fd);
  }
}

bool HttpServer::ReadHead(HttpConnection& connection, std::string* head) {
  char buffer[4096];
  while (head->find("\r\n\r\n") == std::string::npos) {
    if (head->size() > kMaxRequestHead) return true;  // Too large: answered.
    const ssize_t n = connection.Read(buffer, sizeof(buffer));
    if (n <= 0) return false;
    head->append(buffer, static_cast<size_t>(n));
  }
  head->resize(head->find("\r\n\r\n") + 4);  // A body, if any, is not read.
  return true;
}

void HttpServer::Serve(int fd) {
  timeval timeout = absl::ToTimeval(options_.io_timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::unique_ptr<HttpConnection> connection;
  if (tls_ != nullptr) {
    absl::StatusOr<std::unique_ptr<HttpConnection>> accepted = tls_->Accept(fd);
    if (!accepted.ok()) return;  // A plaintext or untrusted client.
    connection = *std::move(accepted);
  } else {
    connection = PlainConnection(fd);
  }
  std::string head;
  if (!ReadHead(*connection, &head)) return;
  HttpResponse response;
  if (head.size() > kMaxRequestHead) {
    response = ErrorResponse(absl::InvalidArgumentError(
        absl::StrCat("the request head exceeds ", kMaxRequestHead, " bytes")));
    response.status = 431;
  } else {
    absl::StatusOr<HttpRequest> request = ParseRequestHead(head);
    response =
        request.ok() ? handler_(*request) : ErrorResponse(request.status());
  }
  if (response.stream) {
    ServeStream(*connection, response);
    return;
  }
  connection->WriteAll(absl::StrCat(
      Head(response, response.body.size(), "Cache-Control: no-store\r\n"),
      response.body));
}

bool HttpServer::BeginStream(StreamSignal* signal) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || static_cast<int>(streams_.size()) >= options_.max_streams) {
    return false;
  }
  streams_.insert(signal);
  return true;
}

void HttpServer::EndStream(StreamSignal* signal) {
  absl::MutexLock lock(&mu_);
  streams_.erase(signal);
}

void HttpServer::ServeStream(HttpConnection& connection,
                             const HttpResponse& response) {
  if (!BeginStream(response.signal.get())) {
    HttpResponse busy = ErrorResponse(absl::UnavailableError(absl::StrCat(
        "this coordinator serves ", options_.max_streams,
        " event streams at most, or is stopping; close one or retry later")));
    busy.extra_headers = "Retry-After: 5\r\n";
    connection.WriteAll(
        absl::StrCat(Head(busy, busy.body.size(), ""), busy.body));
    return;
  }
  if (connection.WriteAll(
          Head(response, std::nullopt,
               "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n"))) {
    ConnectionWriter writer(connection);
    response.stream(writer, *response.signal);
  }
  EndStream(response.signal.get());
}

}  // namespace server
}  // namespace gradnorm
