// Translates between absl::Status (what gradnorm's code returns) and
// grpc::Status (what crosses the wire), once, at the edges: the coordinator's
// service answers with ToGrpcStatus, the client library returns
// FromGrpcStatus of what a call got.
//
//   return ToGrpcStatus(aggregator->RegisterRun(request).status());
//   if (!status.ok()) return FromGrpcStatus(status, "Report");
//
// The canonical codes of both libraries have the same numeric values; this
// header is the only place that relies on it. Messages pass through
// unchanged, prefixed with the failing call when one is named.
// Thread-safe: pure functions.
#ifndef GRADNORM_COMMON_GRPC_STATUS_H_
#define GRADNORM_COMMON_GRPC_STATUS_H_

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
                  static_cast<int>(absl::StatusCode::kResourceExhausted) ==
                      static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED) &&
                  static_cast<int>(absl::StatusCode::kUnavailable) ==
                      static_cast<int>(grpc::StatusCode::UNAVAILABLE) &&
                  static_cast<int>(absl::StatusCode::kUnauthenticated) ==
                      static_cast<int>(grpc::StatusCode::UNAUTHENTICATED),
              "absl and gRPC canonical status codes must share values");

// The grpc::Status with the same code and message. absl codes outside gRPC's
// range (none exist today) become UNKNOWN.
inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  const int code = static_cast<int>(status.code());
  if (code < 0 || code > static_cast<int>(grpc::StatusCode::UNAUTHENTICATED)) {
    return grpc::Status(grpc::StatusCode::UNKNOWN,
                        std::string(status.message()));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(code),
                      std::string(status.message()));
}

// The absl::Status with the same code; the message is "<call>: <text>" (the
// text alone when `call` is empty). Codes outside the canonical range become
// UNKNOWN.
inline absl::Status FromGrpcStatus(const grpc::Status& status,
                                   absl::string_view call = "") {
  if (status.ok()) return absl::OkStatus();
  std::string message = call.empty()
                            ? status.error_message()
                            : absl::StrCat(call, ": ", status.error_message());
  const int code = static_cast<int>(status.error_code());
  if (code <= 0 ||
      code > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(message);
  }
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

}  // namespace gradnorm

#endif  // GRADNORM_COMMON_GRPC_STATUS_H_
