// A small HTTP/1.1 server (civetweb) that hands every request to one handler:
// the coordinator's HTTP API (json_api.h) on its own port.
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
// with 503. Stop (or the destructor) cancels the streams and waits for
// requests in progress.
#ifndef GRADNORM_SERVER_HTTP_HTTP_SERVER_H_
#define GRADNORM_SERVER_HTTP_HTTP_SERVER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/http/http_message.h"
#include "server/http/stream_signal.h"

struct mg_context;

namespace gradnorm {
namespace server {

struct HttpServerOptions {
  // host:port; port 0 picks a free port (see HttpServer::port()).
  std::string listen = "127.0.0.1:0";
  // Worker threads, each serving one connection at a time.
  int threads = 32;
  // Streamed responses (event streams) served at once; each holds a worker
  // thread. Must be below `threads`.
  int max_streams = 24;
};

class HttpServer {
 public:
  using Handler = std::function<HttpResponse(const HttpRequest&)>;

  // INVALID_ARGUMENT for a listen address that is not host:port,
  // UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(
      const HttpServerOptions& options, Handler handler);

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Stops listening and waits for requests in progress. Idempotent.
  void Stop();

  // civetweb's request callback (public for its C signature).
  int Serve(void* connection);
  // Serves a streamed response (HttpResponse::stream).
  int ServeStream(void* connection, const HttpResponse& response);
  // civetweb's log callback: lines logged while starting say why mg_start
  // failed; later ones are dropped (civetweb prints nothing either way).
  void RecordLog(const char* message);

 private:
  HttpServer(Handler handler, int max_streams)
      : handler_(std::move(handler)), max_streams_(max_streams) {}

  // Registers a stream about to start; false when the server is stopping or
  // serves max_streams_ already.
  bool BeginStream(StreamSignal* signal);
  void EndStream(StreamSignal* signal);

  const Handler handler_;
  const int max_streams_;
  absl::Mutex streams_mu_;
  bool stopping_ ABSL_GUARDED_BY(streams_mu_) = false;
  absl::flat_hash_set<StreamSignal*> streams_ ABSL_GUARDED_BY(streams_mu_);
  mg_context* context_ = nullptr;
  int port_ = 0;
  absl::Mutex log_mu_;
  bool starting_ ABSL_GUARDED_BY(log_mu_) = true;
  std::string start_log_ ABSL_GUARDED_BY(log_mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_SERVER_H_
