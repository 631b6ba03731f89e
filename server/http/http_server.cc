#include "server/http/http_server.h"

#include <civetweb.h>

#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"

namespace gradnorm {
namespace server {
namespace {

std::string UrlDecode(absl::string_view text, bool form) {
  std::string out(text.size() + 1, '\0');
  const int n =
      mg_url_decode(text.data(), static_cast<int>(text.size()), out.data(),
                    static_cast<int>(out.size()), form ? 1 : 0);
  out.resize(n < 0 ? 0 : n);
  return out;
}

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

int ServeRequest(mg_connection* connection, void* server) {
  return static_cast<HttpServer*>(server)->Serve(connection);
}

int LogMessage(const mg_connection* connection, const char* message) {
  auto* server =
      static_cast<HttpServer*>(mg_get_user_data(mg_get_context(connection)));
  if (server != nullptr) server->RecordLog(message);
  return 1;  // Handled here: civetweb prints nothing.
}

// Writes a streamed body straight to the client's socket.
class ConnectionWriter : public ResponseWriter {
 public:
  explicit ConnectionWriter(mg_connection* connection)
      : connection_(connection) {}
  bool Write(absl::string_view bytes) override {
    return mg_write(connection_, bytes.data(), bytes.size()) ==
           static_cast<int>(bytes.size());
  }

 private:
  mg_connection* const connection_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(
    const HttpServerOptions& options, Handler handler) {
  const size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 ||
      colon + 1 == options.listen.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP listen address '", options.listen,
        "' is invalid; expected host:port (port 0: any free one)"));
  }
  if (options.max_streams < 0 || options.max_streams >= options.threads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "HTTP max_streams ", options.max_streams,
        " is invalid; expected 0 to threads - 1 (", options.threads - 1,
        "): each stream holds a worker thread"));
  }
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });
  auto server = std::unique_ptr<HttpServer>(
      new HttpServer(std::move(handler), options.max_streams));
  const std::string threads = absl::StrCat(options.threads);
  const char* config[] = {"listening_ports",
                          options.listen.c_str(),
                          "num_threads",
                          threads.c_str(),
                          "request_timeout_ms",
                          "30000",
                          nullptr};
  mg_callbacks callbacks;
  std::memset(&callbacks, 0, sizeof(callbacks));
  callbacks.log_message = LogMessage;
  server->context_ = mg_start(&callbacks, server.get(), config);
  {
    absl::MutexLock lock(&server->log_mu_);
    server->starting_ = false;
    if (server->context_ == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("cannot serve HTTP on ", options.listen, ": ",
                       server->start_log_.empty() ? "civetweb could not start"
                                                  : server->start_log_));
    }
  }
  mg_set_request_handler(server->context_, "/", ServeRequest, server.get());
  mg_server_port ports[4];
  const int n = mg_get_server_ports(server->context_, 4, ports);
  if (n < 1) {
    return absl::UnavailableError(
        absl::StrCat("HTTP server on ", options.listen, " bound no port"));
  }
  server->port_ = ports[0].port;
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::RecordLog(const char* message) {
  absl::MutexLock lock(&log_mu_);
  if (!starting_) return;
  absl::StrAppend(&start_log_, start_log_.empty() ? "" : "; ", message);
}

bool HttpServer::BeginStream(StreamSignal* signal) {
  absl::MutexLock lock(&streams_mu_);
  if (stopping_ || static_cast<int>(streams_.size()) >= max_streams_) {
    return false;
  }
  streams_.insert(signal);
  return true;
}

void HttpServer::EndStream(StreamSignal* signal) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(signal);
}

void HttpServer::Stop() {
  {
    absl::MutexLock lock(&streams_mu_);
    stopping_ = true;
    for (StreamSignal* signal : streams_) signal->Cancel();
    // Streams write their end event before the port closes (civetweb drops
    // writes once stopping); one stuck writing to a client that reads
    // nothing is cut off.
    auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
      return streams_.empty();
    };
    streams_mu_.AwaitWithTimeout(absl::Condition(&ended), absl::Seconds(5));
  }
  if (context_ != nullptr) {
    mg_stop(context_);
    context_ = nullptr;
  }
}

int HttpServer::ServeStream(void* opaque, const HttpResponse& response) {
  auto* connection = static_cast<mg_connection*>(opaque);
  if (!BeginStream(response.signal.get())) {
    const std::string body = absl::StrCat(
        "{\"code\":\"UNAVAILABLE\",\"message\":\"this coordinator serves ",
        max_streams_,
        " event streams at most, or is stopping; close one or retry "
        "later\"}");
    mg_printf(connection,
              "HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
              "application/json\r\nContent-Length: %zu\r\nRetry-After: "
              "5\r\nConnection: close\r\n\r\n",
              body.size());
    mg_write(connection, body.data(), body.size());
    return 503;
  }
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nCache-Control: "
            "no-store\r\nX-Accel-Buffering: no\r\nConnection: "
            "close\r\n\r\n",
            response.status, Reason(response.status),
            response.content_type.c_str());
  ConnectionWriter writer(connection);
  response.stream(writer, *response.signal);
  EndStream(response.signal.get());
  return response.status;
}

int HttpServer::Serve(void* opaque) {
  auto* connection = static_cast<mg_connection*>(opaque);
  const mg_request_info* info = mg_get_request_info(connection);
  HttpRequest request;
  request.method = info->request_method != nullptr ? info->request_method : "";
  request.path = info->local_uri != nullptr ? info->local_uri : "";
  if (info->query_string != nullptr) {
    for (absl::string_view pair :
         absl::StrSplit(info->query_string, '&', absl::SkipEmpty())) {
      const size_t eq = pair.find('=');
      request.query[UrlDecode(pair.substr(0, eq), true)] =
          eq == absl::string_view::npos ? ""
                                        : UrlDecode(pair.substr(eq + 1), true);
    }
  }
  if (const char* authorization = mg_get_header(connection, "Authorization")) {
    request.authorization = authorization;
  }
  if (const char* last = mg_get_header(connection, "Last-Event-ID")) {
    request.last_event_id = last;
  }
  const HttpResponse response = handler_(request);
  if (response.stream) return ServeStream(connection, response);
  mg_printf(connection,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
            response.status, Reason(response.status),
            response.content_type.c_str(), response.body.size(),
            response.extra_headers.c_str());
  mg_write(connection, response.body.data(), response.body.size());
  return response.status;
}

}  // namespace server
}  // namespace gradnorm
