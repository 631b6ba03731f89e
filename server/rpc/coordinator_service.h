// The coordinator's gRPC service: thin adapters between gradnorm.v1.Coordinator
// (callback API) and the Aggregator. Each handler authorizes the caller,
// parses the request, hands it to the Aggregator and maps the absl::Status it
// gets back (grpc_status.h); none holds a thread while it waits.
//
// Requests are parsed here, not by gRPC (wire_message.h): bytes that do not
// parse get INVALID_ARGUMENT naming the rpc and the expected message, after
// authorization; on a ReportStream such a request ends the stream with that
// error.
//
//   CoordinatorService service(aggregator.get(), authenticator.get(),
//   &metrics); grpc::ServerBuilder builder; builder.RegisterService(&service);
//
// Report answers from the Aggregator's callback (after the round's record is
// committed). The caller's deadline is passed on, shortened by a margin
// (call_deadline.h) so that the Aggregator's DEADLINE_EXCEEDED, which names
// the missing participants, reaches the caller before its own deadline fires.
// A cancelled call is answered with CANCELLED at once; its report stays in the
// round (a retry of the same report rejoins it).
//
// ReportStream serves one Report per request on a long-lived stream, one at a
// time (read, Aggregator, write, read...), each request's timeout_ms bounded by
// the stream's own deadline and shortened by the same margin. A report's
// error is written as that report's answer; UNAVAILABLE (shutdown) ends the
// stream instead, so the client reconnects.
//
// WatchRun streams the Aggregator's RoundWatch, one write in flight at a time,
// woken by the watch's on_ready; it ends with UNAVAILABLE when the Aggregator
// shuts down and with CANCELLED when the caller goes away.
//
// WatchRun ends with OK once a finished run's last round was written, and
// with NOT_FOUND when the run is deleted.
//
// Auth: with an authenticator, RegisterRun, Report, ReportStream and
// FinishRun need role trainer, DeleteRun role admin, the queries any role
// (auth.h); without one every call is allowed. The
// grpc.health.v1 service is never behind tokens (probes carry none).
//
// RegisterRun runs on the gRPC callback thread and waits for the store's
// commit of the run (rare, once per run and job).
//
// Thread-safety: the service is safe for gRPC's concurrent calls. `aggregator`,
// `auth` and `metrics` must outlive every call: shut the grpc::Server down
// before destroying them.
#ifndef GRADNORM_SERVER_RPC_COORDINATOR_SERVICE_H_
#define GRADNORM_SERVER_RPC_COORDINATOR_SERVICE_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/core/aggregator.h"
#include "server/core/event_log.h"
#include "server/rpc/auth.h"
#include "server/rpc/metrics.h"

namespace gradnorm {
namespace server {

class StreamRegistry;

// Every rpc of gradnorm.v1.Coordinator, registered with its request and
// response as bytes.
using RawCoordinatorService =
    v1::Coordinator::WithRawCallbackMethod_RegisterRun<
        v1::Coordinator::WithRawCallbackMethod_Report<
            v1::Coordinator::WithRawCallbackMethod_ReportStream<
                v1::Coordinator::WithRawCallbackMethod_ListRuns<
                    v1::Coordinator::WithRawCallbackMethod_GetRun<
                        v1::Coordinator::WithRawCallbackMethod_GetHistory<
                            v1::Coordinator::WithRawCallbackMethod_GetSummary<
                                v1::Coordinator::WithRawCallbackMethod_WatchRun<
                                    v1::Coordinator::
                                        WithRawCallbackMethod_FinishRun<
                                            v1::Coordinator::
                                                WithRawCallbackMethod_DeleteRun<
                                                    v1::Coordinator::
                                                        Service>>>>>>>>>>;

class CoordinatorService final : public RawCoordinatorService {
 public:
  // `auth` may be null (no authentication), `log` too (authentication
  // failures are then not logged; with one, at most one line a second, with
  // the count held back). None is owned.
  CoordinatorService(Aggregator* aggregator, const TokenAuthenticator* auth,
                     CoordinatorMetrics* metrics, EventLog* log = nullptr);

  ~CoordinatorService() override;

  CoordinatorService(const CoordinatorService&) = delete;
  CoordinatorService& operator=(const CoordinatorService&) = delete;

  // Ends every open ReportStream with UNAVAILABLE (a report waiting in a
  // round keeps its place there) and refuses new ones the same way. Call
  // after Aggregator::Shutdown and before grpc::Server::Shutdown, which
  // otherwise waits its whole grace period for idle streams.
  void ShutdownStreams();

  grpc::ServerUnaryReactor* RegisterRun(grpc::CallbackServerContext* context,
                                        const grpc::ByteBuffer* request,
                                        grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ReportStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* ListRuns(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetRun(grpc::CallbackServerContext* context,
                                   const grpc::ByteBuffer* request,
                                   grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetHistory(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetSummary(grpc::CallbackServerContext* context,
                                       const grpc::ByteBuffer* request,
                                       grpc::ByteBuffer* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* WatchRun(
      grpc::CallbackServerContext* context,
      const grpc::ByteBuffer* request) override;
  grpc::ServerUnaryReactor* FinishRun(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* DeleteRun(grpc::CallbackServerContext* context,
                                      const grpc::ByteBuffer* request,
                                      grpc::ByteBuffer* response) override;

 private:
  // Authorizes, parses the request bytes (INVALID_ARGUMENT naming `rpc` when
  // they do not parse), calls `handle(request)` -> absl::StatusOr<Response>
  // and answers with its response bytes or its error.
  template <typename Request, typename Response, typename Handle>
  grpc::ServerUnaryReactor* Unary(absl::string_view rpc, Permission permission,
                                  grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request_bytes,
                                  grpc::ByteBuffer* response_bytes,
                                  Handle handle);

  absl::Status Authorize(grpc::CallbackServerContext* context,
                         Permission permission) const;

  Aggregator* const aggregator_;
  const TokenAuthenticator* const auth_;
  CoordinatorMetrics* const metrics_;
  EventLog* const log_;
  // A client can fail authentication as often as it likes: its log lines
  // are limited.
  mutable LogLimiter auth_failures_{absl::Seconds(1)};
  const std::unique_ptr<StreamRegistry> streams_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_COORDINATOR_SERVICE_H_
