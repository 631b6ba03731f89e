// Protocol buffers as the JSON the HTTP API returns: the proto3 JSON mapping
// with every field present (defaults too) and proto field names, except that
// 64-bit integers are JSON numbers whenever a double holds them exactly
// (|v| <= 2^53; larger ones stay strings, as proto3 JSON writes them all), so
// that dashboards can plot steps and timestamps without parsing strings.
// Doubles: NaN, Infinity and -Infinity are the strings proto3 JSON uses;
// others print with the fewest digits that read back as the same double.
//
//   std::string body = ToJson(response);   // {"runs":[{"run_id":"r",...}]}
#ifndef GRADNORM_SERVER_HTTP_PROTO_JSON_H_
#define GRADNORM_SERVER_HTTP_PROTO_JSON_H_

#include <string>

#include "google/protobuf/message.h"

namespace gradnorm {
namespace server {

std::string ToJson(const google::protobuf::Message& message);

// `text` as a JSON string literal, quotes included.
std::string JsonString(const std::string& text);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_PROTO_JSON_H_
