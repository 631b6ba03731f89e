#include "server/rpc/server_settings.h"

#include "grpc/grpc.h"

namespace gradnorm {
namespace server {

void ApplyServerSettings(grpc::ServerBuilder& builder, int max_message_bytes) {
  // gRPC sets SO_REUSEPORT by default: a second coordinator on a busy port
  // would start and get part of the connections (split brain: a run's jobs
  // reaching different coordinators never complete a round). One port, one
  // process.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  // Keepalive matching the client library: pings every >= 10 s are welcome,
  // with or without calls in flight (a trainer idles between steps).
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60 * 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20 * 1000);
  // Messages are small (at most --max_message_bytes): no bandwidth-delay
  // probe pings, as in the client library.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
}

}  // namespace server
}  // namespace gradnorm
