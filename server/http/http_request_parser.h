// Parses the head of an HTTP/1.x request (request line and header lines, up
// to the blank line) into an HttpRequest.
//
//   absl::StatusOr<HttpRequest> request = ParseRequestHead(
//       "GET /api/v1/runs/r%20x?from=2 HTTP/1.1\r\nHost: h\r\n\r\n");
//   // request->path == "/api/v1/runs/r x", request->query["from"] == "2"
//
// Thread-safety: pure functions.
#ifndef GRADNORM_SERVER_HTTP_HTTP_REQUEST_PARSER_H_
#define GRADNORM_SERVER_HTTP_HTTP_REQUEST_PARSER_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/http/http_message.h"

namespace gradnorm {
namespace server {

// The longest request head the server reads (request line and headers).
inline constexpr size_t kMaxRequestHead = 16 * 1024;

// `head` may end with the blank line or not. The path is URL-decoded (a
// "%2F" stays inside its segment only as far as the handler cares: it sees
// "/"); query parameters are decoded as forms ("+" is a space); a repeated
// parameter keeps its last value. Of the headers, Authorization and
// Last-Event-ID are kept (names are case-insensitive). INVALID_ARGUMENT for a
// malformed request line or header line, or a target that is not a path;
// UNIMPLEMENTED for a version other than HTTP/1.0 and HTTP/1.1.
absl::StatusOr<HttpRequest> ParseRequestHead(absl::string_view head);

// %XX sequences decoded (a malformed one is kept as it is); with
// `plus_is_space`, "+" becomes " " (forms, query strings).
std::string UrlDecode(absl::string_view text, bool plus_is_space);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_HTTP_REQUEST_PARSER_H_
