// The gRPC server settings every coordinator port shares (the coordinator's
// and a replica's): one process per port, the request size limit, and
// keepalive matching the client library's.
//
//   grpc::ServerBuilder builder;
//   ApplyServerSettings(builder, options.max_message_bytes);
#ifndef GRADNORM_SERVER_RPC_SERVER_SETTINGS_H_
#define GRADNORM_SERVER_RPC_SERVER_SETTINGS_H_

#include "grpcpp/server_builder.h"

namespace gradnorm {
namespace server {

void ApplyServerSettings(grpc::ServerBuilder& builder, int max_message_bytes);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_SERVER_SETTINGS_H_
