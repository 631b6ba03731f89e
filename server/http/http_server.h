// A small HTTP/1.1 server that hands every request to one handler: the
// coordinator's HTTP port (json_api.h). Plaintext or TLS (http_tls.h), one
// request per connection (Connection: close), GET-sized requests (the head
// only, no body), a fixed pool of worker threads.
//
//   HttpServerOptions options;
//   options.listen = "127.0.0.1:0";
//   ASSIGN_OR_RETURN(auto server, HttpServer::Start(options, [&](const
//   HttpRequest& r) {
//     return api.Handle(r);
//   }));
//   int port = server->port();
//
// Requests run on the server's worker threads; the handler must be
// thread-safe. A streamed response (HttpResponse::stream) holds its worker
// until it ends; at most `max_streams` run at once, and the next is refused
// with 503. Stop (or the destructor) cancels the streams, ends connections
// in progress and joins the threads.
#ifndef GRADNORM_SERVER_HTTP_HTTP_SERVER_H_
#define GRADNORM_SERVER_HTTP_HTTP_SERVER_H_

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/http/http_connection.h"
#include "server/http/http_message.h"
#include "server/http/http_tls.h"
#include "server/http/stream_signal.h"

namespace gradnorm {
namespace server {

struct HttpServerOptions {
  // host:port; port 0 picks a free port (see HttpServer::port()). The host
  // may be a name, an IPv4 address, or an IPv6 one in brackets ("[::]:80").
  std::string listen = "127.0.0.1:0";
  // Worker threads, each serving one connection at a time.
  int threads = 16;
  // Streamed responses (event streams) served at once; each holds a worker
  // thread. Must be below `threads`.
  int max_streams = 12;
  // A client that sends nothing (or reads nothing) this long is dropped.
  absl::Duration io_timeout = absl::Seconds(30);
  // PEM files: with cert and key the port serves HTTPS only; with client_ca
  // as well it requires a client certificate that chains to that CA (mutual
  // TLS). All empty: plaintext HTTP.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // INVALID_ARGUMENT for a listen address that is not host:port, bad
  // thread counts, or TLS files that are given in part or cannot be used
  // (the message names the file); UNAVAILABLE when the address cannot be
  // bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, Handler handler);

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Stops listening, ends streams (each writes its end) and connections in
  // progress, joins the threads. Idempotent.
  void Stop();

 private:
  HttpServer(Handler handler, const HttpServerOptions& options)
      : handler_(std::move(handler)), options_(options) {}

  void AcceptLoop();
  void WorkLoop();
  void Serve(int fd);
  // Reads the request head; false when the client sent none in time.
  bool ReadHead(HttpConnection& connection, std::string* head);
  void ServeStream(HttpConnection& connection, const HttpResponse& response);
  // Registers a stream about to start; false when the server is stopping or
  // serves max_streams already.
  bool BeginStream(StreamSignal* signal);
  void EndStream(StreamSignal* signal);

  const Handler handler_;
  const HttpServerOptions options_;
  std::unique_ptr<TlsServerContext> tls_;
  int listen_fd_ = -1;
  int wake_fds_[2] = {-1, -1};  // A pipe: a byte wakes the acceptor.
  int port_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> workers_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<int> pending_ ABSL_GUARDED_BY(mu_);  // Accepted, not yet served.
  absl::flat_hash_set<int> serving_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<StreamSignal*> streams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_SERVER_H_
