#include "server/rpc/wire_message.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/support/slice.h"

namespace gradnorm {
namespace server {
namespace {

absl::Status NotParsed(absl::string_view rpc, size_t size,
                       const google::protobuf::Message& request) {
  return absl::InvalidArgumentError(
      absl::StrCat(rpc, ": the request (", size, " bytes) does not parse as ",
                   request.GetDescriptor()->full_name(),
                   "; send a serialized message of that type"));
}

}  // namespace

absl::Status ParseRequest(absl::string_view rpc, absl::string_view bytes,
                          google::protobuf::Message* request) {
  request->Clear();
  if (!request->ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return NotParsed(rpc, bytes.size(), *request);
  }
  return absl::OkStatus();
}

absl::Status ParseRequest(absl::string_view rpc, const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request) {
  std::vector<grpc::Slice> slices;
  if (!bytes.Dump(&slices).ok()) return NotParsed(rpc, 0, *request);
  if (slices.size() == 1) {
    return ParseRequest(
        rpc,
        absl::string_view(reinterpret_cast<const char*>(slices[0].begin()),
                          slices[0].size()),
        request);
  }
  std::string joined;
  joined.reserve(bytes.Length());
  for (const grpc::Slice& slice : slices) {
    joined.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return ParseRequest(rpc, joined, request);
}

grpc::ByteBuffer SerializeMessage(const google::protobuf::Message& message) {
  std::string bytes = message.SerializeAsString();
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace server
}  // namespace gradnorm
