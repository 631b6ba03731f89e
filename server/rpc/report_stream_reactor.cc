#include "server/rpc/report_stream_reactor.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/rpc/call_deadline.h"
#include "server/rpc/wire_message.h"

namespace gradnorm {
namespace server {

// Serves one ReportStream: reads one request, hands its report to the
// Aggregator, writes the outcome, then reads the next; no thread waits.
//
// Lifetime: the reactor is deleted once gRPC called OnDone and nothing else
// holds a pin: the Aggregator's callback of a waiting report holds one (the
// report stays in its round even when the stream goes), and so does
// StreamRegistry::ShutdownAll while it ends the stream.
class ReportStreamReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  ReportStreamReactor(Aggregator* aggregator, CoordinatorMetrics* metrics,
                      StreamRegistry* registry, absl::Time stream_deadline)
      : aggregator_(aggregator),
        metrics_(metrics),
        registry_(registry),
        stream_deadline_(stream_deadline) {}

  void Start() { StartRead(&raw_request_); }

  void Reject(const absl::Status& status) { FinishOnce(ToGrpcStatus(status)); }

  // Ends the stream with UNAVAILABLE: now when it waits for a request or a
  // round, after the write in flight otherwise.
  void ShutDown() {
    bool finish_now;
    {
      absl::MutexLock lock(&mu_);
      shutting_down_ = true;
      finish_now = state_ != State::kWriting && MarkFinished();
    }
    if (finish_now) Finish(ShuttingDown());
  }

  void Pin() {
    absl::MutexLock lock(&mu_);
    ++pins_;
  }

  // Drops a pin; deletes the reactor when it was the last and gRPC is done.
  void Unpin() {
    bool delete_now;
    {
      absl::MutexLock lock(&mu_);
      delete_now = --pins_ == 0 && done_;
    }
    if (delete_now) delete this;
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // The client half-closed, or the stream broke.
      FinishOnce(grpc::Status::OK);
      return;
    }
    // A request that does not parse ends the stream with the reason, rather
    // than being taken for the client's half-close.
    if (absl::Status parsed =
            ParseRequest("ReportStream", raw_request_, &request_);
        !parsed.ok()) {
      FinishOnce(ToGrpcStatus(parsed));
      return;
    }
    bool shutting_down;
    {
      absl::MutexLock lock(&mu_);
      shutting_down = shutting_down_;
      if (!shutting_down) {
        state_ = State::kWaiting;
        ++pins_;  // The Aggregator's callback's.
      }
    }
    if (shutting_down) {
      FinishOnce(ShuttingDown());
      return;
    }
    const absl::Time now = absl::Now();
    absl::Time deadline = stream_deadline_;
    if (request_.timeout_ms() > 0) {
      // absl::Milliseconds takes an int64: a larger uint64 would wrap to a
      // negative timeout, a deadline already passed.
      const int64_t timeout_ms = static_cast<int64_t>(std::min<uint64_t>(
          request_.timeout_ms(), std::numeric_limits<int64_t>::max()));
      deadline = std::min(deadline, now + absl::Milliseconds(timeout_ms));
    }
    step_ = request_.report().step();
    started_ = now;
    aggregator_->Report(request_.report(), AggregatorDeadline(deadline, now),
                        [this](absl::StatusOr<v1::RoundResult> result) {
                          OnOutcome(std::move(result));
                        });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce(
          grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
      return;
    }
    bool shutting_down;
    {
      absl::MutexLock lock(&mu_);
      state_ = State::kReading;
      shutting_down = shutting_down_;
    }
    if (shutting_down) {
      FinishOnce(ShuttingDown());
    } else {
      StartRead(&raw_request_);
    }
  }

  void OnCancel() override {
    bool finish_now;
    {
      absl::MutexLock lock(&mu_);
      finish_now = state_ == State::kWaiting && MarkFinished();
    }
    // A pending read or write completes with ok = false and finishes the
    // stream; a waiting report has neither, so finish here.
    if (finish_now) {
      Finish(grpc::Status(
          grpc::StatusCode::CANCELLED,
          "the client cancelled the stream; the waiting report stays in its "
          "round, resend it to rejoin"));
    }
  }

  void OnDone() override {
    registry_->Remove(this);
    bool delete_now;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      delete_now = pins_ == 0;
    }
    if (delete_now) delete this;
  }

 private:
  enum class State { kReading, kWaiting, kWriting };

  static grpc::Status ShuttingDown() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the coordinator is shutting down; resend the report "
                        "on a new stream to the restarted coordinator");
  }

  void OnOutcome(absl::StatusOr<v1::RoundResult> result) {
    metrics_->RecordRoundWait(absl::ToDoubleSeconds(absl::Now() - started_));
    metrics_->RecordReport(result.status().code());
    bool write = false;
    bool unavailable = false;
    bool delete_now = false;
    {
      absl::MutexLock lock(&mu_);
      --pins_;
      if (done_) {
        delete_now = pins_ == 0;
      } else if (!finished_) {
        // UNAVAILABLE (the Aggregator is shutting down) ends the stream, so
        // the client reconnects; every other outcome answers this report.
        unavailable = result.status().code() == absl::StatusCode::kUnavailable;
        write = !unavailable;
        if (write) {
          state_ = State::kWriting;
        } else {
          finished_ = true;
        }
      }
    }
    // The pin is dropped: `this` stays valid only because nobody else can
    // finish the stream now (it is marked finished, or kWriting with no
    // operation pending, which ShutDown and OnCancel leave alone).
    if (delete_now) {
      delete this;
      return;
    }
    if (unavailable) {
      Finish(ToGrpcStatus(result.status()));
      return;
    }
    if (!write) return;
    response_.Clear();
    response_.set_step(step_);
    if (result.ok()) {
      *response_.mutable_result() = *std::move(result);
    } else {
      v1::ReportError* error = response_.mutable_error();
      error->set_code(static_cast<int32_t>(result.status().code()));
      error->set_message(std::string(result.status().message()));
    }
    raw_response_ = SerializeMessage(response_);
    StartWrite(&raw_response_);
  }

  void FinishOnce(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (!MarkFinished()) return;
    }
    Finish(std::move(status));
  }

  // True (and marked) when nobody finished the stream yet. ShutDown and
  // OnCancel decide to finish under the same lock as they read state_, so
  // OnOutcome (on the Aggregator's thread, holding no gRPC reaction) cannot
  // start a write that races with their Finish, or with the OnDone that
  // follows it and deletes the reactor.
  bool MarkFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  Aggregator* const aggregator_;
  CoordinatorMetrics* const metrics_;
  StreamRegistry* const registry_;
  const absl::Time stream_deadline_;

  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kReading;
  int pins_ ABSL_GUARDED_BY(mu_) = 0;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;

  // Touched only by the one reaction in progress: reads, the Aggregator's
  // callback and writes follow one another.
  grpc::ByteBuffer raw_request_;
  v1::ReportStreamRequest request_;
  v1::ReportStreamResponse response_;
  grpc::ByteBuffer raw_response_;
  uint64_t step_ = 0;
  absl::Time started_;
};

bool StreamRegistry::Add(ReportStreamReactor* reactor) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return false;
  open_.insert(reactor);
  return true;
}

void StreamRegistry::Remove(ReportStreamReactor* reactor) {
  absl::MutexLock lock(&mu_);
  open_.erase(reactor);
}

void StreamRegistry::ShutdownAll() {
  std::vector<ReportStreamReactor*> open;
  {
    absl::MutexLock lock(&mu_);
    shut_down_ = true;
    for (ReportStreamReactor* reactor : open_) {
      // Pinned under mu_: its OnDone (which Removes first) cannot delete it
      // until Unpin below.
      reactor->Pin();
      open.push_back(reactor);
    }
  }
  for (ReportStreamReactor* reactor : open) {
    reactor->ShutDown();
    reactor->Unpin();
  }
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
NewReportStreamReactor(Aggregator* aggregator, CoordinatorMetrics* metrics,
                       StreamRegistry* streams, absl::Time stream_deadline,
                       const absl::Status& rejected) {
  auto* reactor =
      new ReportStreamReactor(aggregator, metrics, streams, stream_deadline);
  absl::Status status = rejected;
  if (status.ok() && !streams->Add(reactor)) {
    status = absl::UnavailableError(
        "the coordinator is shutting down; open the stream again on the "
        "restarted coordinator");
  }
  if (!status.ok()) {
    reactor->Reject(status);
  } else {
    reactor->Start();
  }
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
