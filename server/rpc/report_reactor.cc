#include "server/rpc/report_reactor.h"

#include <memory>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/rpc/wire_message.h"

namespace gradnorm {
namespace server {
namespace {

// Answers one Report. The reactor is finished exactly once, by whichever comes
// first: the Aggregator's callback or the call's cancellation. The callback
// may outlive the reactor (a cancelled call's report stays in its round), so
// it holds only this shared Outcome, never the reactor itself.
class ReportReactor final : public grpc::ServerUnaryReactor {
 public:
  ReportReactor(grpc::ByteBuffer* response, CoordinatorMetrics* metrics)
      : outcome_(std::make_shared<Outcome>(this, response, metrics)) {}

  void Start(Aggregator* aggregator, const v1::ReportRequest& request,
             absl::Time deadline) {
    std::shared_ptr<Outcome> outcome = outcome_;
    aggregator->Report(request, deadline,
                       [outcome](absl::StatusOr<v1::RoundResult> result) {
                         outcome->Complete(std::move(result));
                       });
  }

  void Reject(const absl::Status& status) { outcome_->Complete(status); }

  void OnCancel() override {
    // A local reference: Complete's Finish may run OnDone, which deletes this
    // reactor and its outcome_ member.
    std::shared_ptr<Outcome> outcome = outcome_;
    outcome->Complete(absl::CancelledError(
        "the caller cancelled the Report (or its deadline passed); its partial "
        "stays in the round, retry the same report to rejoin"));
  }

  void OnDone() override { delete this; }

  // Lets gRPC run OnDone (and OnCancel) where the call completes instead of
  // handing them to its executor thread: that hand-off woke a thread for every
  // Report after its answer was sent, which cost throughput (see
  // //server/benchmark:coordinator_benchmark) though not latency. Both
  // reactions are short and never block: OnDone deletes the reactor; OnCancel
  // finishes it under Outcome's lock, which nothing holds while calling into
  // gRPC.
  bool InternalInlineable() override { return true; }

 private:
  class Outcome {
   public:
    Outcome(ReportReactor* reactor, grpc::ByteBuffer* response,
            CoordinatorMetrics* metrics)
        : reactor_(reactor),
          response_(response),
          metrics_(metrics),
          start_(absl::Now()) {}

    void Complete(absl::StatusOr<v1::RoundResult> result) {
      {
        absl::MutexLock lock(&mu_);
        if (finished_) return;
        finished_ = true;
      }
      // From here on this thread alone touches the reactor, until Finish hands
      // it back to gRPC (which may call OnDone and delete it right away).
      metrics_->RecordRoundWait(absl::ToDoubleSeconds(absl::Now() - start_));
      metrics_->RecordReport(result.status().code());
      if (result.ok()) {
        v1::ReportResponse response;
        *response.mutable_result() = *std::move(result);
        *response_ = SerializeMessage(response);
        reactor_->Finish(grpc::Status::OK);
      } else {
        reactor_->Finish(ToGrpcStatus(result.status()));
      }
    }

   private:
    ReportReactor* const reactor_;
    grpc::ByteBuffer* const response_;
    CoordinatorMetrics* const metrics_;
    const absl::Time start_;
    absl::Mutex mu_;
    bool finished_ ABSL_GUARDED_BY(mu_) = false;
  };

  std::shared_ptr<Outcome> outcome_;
};

}  // namespace

grpc::ServerUnaryReactor* NewReportReactor(Aggregator* aggregator,
                                           CoordinatorMetrics* metrics,
                                           grpc::ByteBuffer* response,
                                           const absl::Status& rejected,
                                           const v1::ReportRequest& request,
                                           absl::Time deadline) {
  auto* reactor = new ReportReactor(response, metrics);
  if (!rejected.ok()) {
    reactor->Reject(rejected);
  } else {
    reactor->Start(aggregator, request, deadline);
  }
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
