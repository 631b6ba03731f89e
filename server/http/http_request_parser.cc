#include "server/http/http_request_parser.h"

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace gradnorm {
namespace server {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Printable ASCII without spaces: what a request target may hold.
bool IsTargetChar(char c) { return c > ' ' && c < 0x7f; }

}  // namespace

std::string UrlDecode(absl::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      const int hi = HexValue(text[i + 1]), lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
  return out;
}

absl::StatusOr<HttpRequest> ParseRequestHead(absl::string_view head) {
  if (head.size() > kMaxRequestHead) {
    return absl::InvalidArgumentError(
        absl::StrCat("the request head has ", head.size(),
                     " bytes; expected at most ", kMaxRequestHead));
  }
  absl::ConsumeSuffix(&head, "\r\n\r\n");
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  const std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || parts[0].empty() ||
      !absl::StartsWith(parts[1], "/")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "request line '", absl::CHexEscape(lines[0].substr(0, 200)),
        "' is malformed; expected 'METHOD /path HTTP/1.1'"));
  }
  if (parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0") {
    return absl::UnimplementedError(
        absl::StrCat("HTTP version '", absl::CHexEscape(parts[2].substr(0, 20)),
                     "' is not served; expected HTTP/1.1 or HTTP/1.0"));
  }
  for (char c : parts[1]) {
    if (!IsTargetChar(c)) {
      return absl::InvalidArgumentError(
          "the request target holds a control or non-ASCII byte; expected a "
          "URL-encoded path");
    }
  }
  HttpRequest request;
  request.method = std::string(parts[0]);
  const absl::string_view target = parts[1];
  const size_t question = target.find('?');
  request.path = UrlDecode(target.substr(0, question), false);
  if (question != absl::string_view::npos) {
    for (absl::string_view pair :
         absl::StrSplit(target.substr(question + 1), '&', absl::SkipEmpty())) {
      const size_t eq = pair.find('=');
      request.query[UrlDecode(pair.substr(0, eq), true)] =
          eq == absl::string_view::npos ? ""
                                        : UrlDecode(pair.substr(eq + 1), true);
    }
  }
  for (size_t i = 1; i < lines.size(); ++i) {
    const absl::string_view line = lines[i];
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("header line '", absl::CHexEscape(line.substr(0, 200)),
                       "' is malformed; expected 'Name: value'"));
    }
    const std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (name == "authorization") {
      request.authorization = value;
    } else if (name == "last-event-id") {
      request.last_event_id = value;
    }
  }
  return request;
}

}  // namespace server
}  // namespace gradnorm
