// Request and response bytes of the coordinator's rpcs, parsed and written by
// the service itself rather than by gRPC's typed handlers: the typed API
// answers a request whose bytes do not parse with UNIMPLEMENTED and no
// message, and ends a stream carrying one as if the client had half-closed.
//
//   v1::ReportRequest request;
//   absl::Status status = ParseRequest("Report", *bytes, &request);
//   // INVALID_ARGUMENT "Report: the request (2 bytes) does not parse as
//   // gradnorm.v1.ReportRequest ..." when it does not.
//   *response_bytes = SerializeMessage(response);
//
// Thread-safe: pure functions.
#ifndef GRADNORM_SERVER_RPC_WIRE_MESSAGE_H_
#define GRADNORM_SERVER_RPC_WIRE_MESSAGE_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"

namespace gradnorm {
namespace server {

// Parses `bytes` into `request` (cleared first). Errors: INVALID_ARGUMENT
// naming `rpc`, the size and the expected message type.
absl::Status ParseRequest(absl::string_view rpc, const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request);

// Same, from a plain string (fuzzing and tests use it; the service passes
// gRPC's buffers).
absl::Status ParseRequest(absl::string_view rpc, absl::string_view bytes,
                          google::protobuf::Message* request);

// The wire bytes of `message`.
grpc::ByteBuffer SerializeMessage(const google::protobuf::Message& message);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_WIRE_MESSAGE_H_
