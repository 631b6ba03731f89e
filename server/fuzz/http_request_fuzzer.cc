// Fuzzes the HTTP port's request parser (server/http/http_request_parser.h)
// with arbitrary bytes: a head either fails with INVALID_ARGUMENT or
// UNIMPLEMENTED and a message, or parses to a request whose path starts with
// "/" and whose method has no space; URL decoding never grows its input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "server/http/http_request_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gradnorm::server;
  const std::string head(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<HttpRequest> request = ParseRequestHead(head);
  if (!request.ok()) {
    const absl::StatusCode code = request.status().code();
    if (code != absl::StatusCode::kInvalidArgument &&
        code != absl::StatusCode::kUnimplemented) {
      std::abort();
    }
    if (request.status().message().empty()) std::abort();
  } else {
    if (request->path.empty() || request->path[0] != '/') std::abort();
    if (request->method.empty() ||
        request->method.find(' ') != std::string::npos) {
      std::abort();
    }
  }
  if (UrlDecode(head, true).size() > head.size()) std::abort();
  return 0;
}
