// Translates a grpc::Status (what the coordinator's RPCs return) into an
// absl::Status (what the client library returns), once, at the edge.
//
//   grpc::Status status = stub->Report(&context, request, &response);
//   if (!status.ok()) return FromGrpcStatus(status, "Report");
//
// The canonical codes of both libraries have the same numeric values; this
// header is the only client code that relies on it. The message keeps the
// server's text, prefixed with the failing call.
//
// Thread-safety: pure functions.
#ifndef GRADNORM_CLIENT_GRPC_STATUS_H_
#define GRADNORM_CLIENT_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"

namespace gradnorm {

static_assert(static_cast<int>(absl::StatusCode::kInvalidArgument) ==
                      static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT) &&
                  static_cast<int>(absl::StatusCode::kDeadlineExceeded) ==
                      static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED) &&
                  static_cast<int>(absl::StatusCode::kAlreadyExists) ==
                      static_cast<int>(grpc::StatusCode::ALREADY_EXISTS) &&
                  static_cast<int>(absl::StatusCode::kUnavailable) ==
                      static_cast<int>(grpc::StatusCode::UNAVAILABLE) &&
                  static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                      static_cast<int>(grpc::StatusCode::UNAUTHENTICATED),
              "absl and gRPC canonical status codes must share values");

// The absl::Status with the same code; the message is "<call>: <server text>"
// (or the server text alone when `call` is empty). Codes outside the canonical
// range become UNKNOWN.
inline absl::Status FromGrpcStatus(const grpc::Status& status,
                                   absl::string_view call = "") {
  if (status.ok()) return absl::OkStatus();
  std::string message = call.empty()
                            ? status.error_message()
                            : absl::StrCat(call, ": ", status.error_message());
  const int code = static_cast<int>(status.error_code());
  if (code <= 0 || code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(message);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_GRPC_STATUS_H_
