// The reactor of one ReportStream call, and the registry of open streams.
//
//   StreamRegistry streams;
//   return NewReportStreamReactor(aggregator, metrics, &streams,
//                                 DeadlineOf(context), status);
//   ...
//   streams.ShutdownAll();   // at shutdown: every open stream ends now
//
// A stream reads one request, hands its report to the Aggregator, writes the
// outcome, then reads the next; no thread waits. A request that does not parse
// ends the stream with INVALID_ARGUMENT.
#ifndef GRADNORM_SERVER_RPC_REPORT_STREAM_REACTOR_H_
#define GRADNORM_SERVER_RPC_REPORT_STREAM_REACTOR_H_

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "server/core/aggregator.h"
#include "server/rpc/metrics.h"

namespace gradnorm {
namespace server {

class ReportStreamReactor;

// The open ReportStreams, so that shutdown can end idle ones at once instead
// of holding the server's shutdown for its grace period.
class StreamRegistry {
 public:
  // Adds `reactor`; false once ShutdownAll ran.
  bool Add(ReportStreamReactor* reactor);
  void Remove(ReportStreamReactor* reactor);
  // Ends every open stream with UNAVAILABLE; later Adds fail.
  void ShutdownAll();

 private:
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_set<ReportStreamReactor*> open_ ABSL_GUARDED_BY(mu_);
};

// A reactor that ends the stream with `rejected` when it is not OK (or with
// UNAVAILABLE once `streams` shut down), else serves it until the client
// half-closes; `stream_deadline` is the call's. gRPC owns it.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
NewReportStreamReactor(Aggregator* aggregator, CoordinatorMetrics* metrics,
                       StreamRegistry* streams, absl::Time stream_deadline,
                       const absl::Status& rejected);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_REPORT_STREAM_REACTOR_H_
