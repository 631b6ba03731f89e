// Routes the protobuf library's own log lines into the coordinator's
// operational log. Parsing a request whose string field is not UTF-8 makes
// libprotobuf print "[libprotobuf ERROR ...]" on stderr; the request is then
// refused with INVALID_ARGUMENT, so the line says something about a client,
// not an error of the coordinator, and a client could repeat it at will.
// Routed, it becomes one warning (event=protobuf_message) at most once a
// second, with the count of lines held back.
//
//   StreamEventLog log(stderr, LogLevel::kInfo);
//   RouteProtobufLogs(&log);      // in main, before serving
//   ...
//   RouteProtobufLogs(nullptr);   // back to libprotobuf's own handler
//
// Thread-safe: the handler may be called from any thread; install and remove
// it while no other thread parses messages.
#ifndef GRADNORM_SERVER_RPC_PROTOBUF_LOG_H_
#define GRADNORM_SERVER_RPC_PROTOBUF_LOG_H_

#include "server/core/event_log.h"

namespace gradnorm {
namespace server {

// `log` (not owned) must outlive the routing; nullptr restores the default.
void RouteProtobufLogs(EventLog* log);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_PROTOBUF_LOG_H_
