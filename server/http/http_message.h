// A request to the coordinator's HTTP port and its response: a whole body,
// or a stream written over time (Server-Sent Events).
//
//   HttpResponse response;
//   response.content_type = "text/event-stream";
//   response.signal = std::make_shared<StreamSignal>();
//   response.stream = [](ResponseWriter& out, StreamSignal& signal) {
//     while (signal.WaitFor(absl::Seconds(15)) != StreamSignal::kCancelled) {
//       if (!out.Write(": still here\n\n")) return;  // the client left
//     }
//   };
#ifndef GRADNORM_SERVER_HTTP_HTTP_MESSAGE_H_
#define GRADNORM_SERVER_HTTP_HTTP_MESSAGE_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "server/http/stream_signal.h"

namespace gradnorm {
namespace server {

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // URL-decoded, without the query
  // Query parameters, URL-decoded.
  std::map<std::string, std::string> query;
  // The Authorization header's value ("" when absent).
  std::string authorization;
  // The Last-Event-ID header's value ("" when absent): where a reconnecting
  // event stream left off.
  std::string last_event_id;
};

// Where a streamed response writes its body.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  // Sends `bytes` now. False once the client is gone.
  virtual bool Write(absl::string_view bytes) = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  // The whole body, unless `stream` is set.
  std::string body;
  // More header lines, each "Name: value\r\n".
  std::string extra_headers;
  // A body written over time: called once the headers are sent, on the
  // server's worker thread, with `signal`; returns when the stream is over,
  // the client left (Write returned false) or `signal` was cancelled (the
  // server stops). Both are set or neither.
  std::function<void(ResponseWriter&, StreamSignal&)> stream;
  std::shared_ptr<StreamSignal> signal;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_MESSAGE_H_
