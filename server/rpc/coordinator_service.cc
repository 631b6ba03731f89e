#include "server/rpc/coordinator_service.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "server/rpc/wire_message.h"

namespace gradnorm {
namespace server {
namespace {

absl::Time DeadlineOf(const grpc::CallbackServerContext* context) {
  const auto deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

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
  // Report after its answer was sent, which cost throughput (0.77-0.82 of the
  // echo service's with it, 0.84-0.91 without) though not latency. Both
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

// Streams a RoundWatch. One write is in flight at a time; Pump() pulls the
// next round when none is, from gRPC's reactions (OnWriteDone) or from the
// watch's on_ready (any thread). on_ready reaches the reactor through Link,
// which keeps the reactor alive while an on_ready call is inside it: OnDone
// then leaves the deletion to that call.
class WatchReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  struct Link {
    absl::Mutex mu;
    WatchReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    int calls_inside ABSL_GUARDED_BY(mu) = 0;
    bool done ABSL_GUARDED_BY(mu) = false;

    void OnReady() {
      WatchReactor* target;
      {
        absl::MutexLock lock(&mu);
        if (done || reactor == nullptr) return;
        target = reactor;
        ++calls_inside;
      }
      target->Pump();
      WatchReactor* to_delete = nullptr;
      {
        absl::MutexLock lock(&mu);
        --calls_inside;
        if (done && calls_inside == 0 && reactor != nullptr) {
          to_delete = reactor;
          reactor = nullptr;
        }
      }
      delete to_delete;
    }
  };

  WatchReactor() : link_(std::make_shared<Link>()) {
    absl::MutexLock lock(&link_->mu);
    link_->reactor = this;
  }

  // Starts the watch and the first write; finishes at once on error.
  void Start(Aggregator* aggregator, const v1::WatchRunRequest& request) {
    std::shared_ptr<Link> link = link_;
    absl::StatusOr<std::unique_ptr<RoundWatch>> watch = aggregator->Watch(
        request.run_id(), request.from_step(), [link] { link->OnReady(); });
    if (!watch.ok()) {
      FinishOnce(ToGrpcStatus(watch.status()));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      watch_ = *std::move(watch);
    }
    Pump();
  }

  void Reject(const absl::Status& status) { FinishOnce(ToGrpcStatus(status)); }

  void Pump() {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      // After a cancel no write may start: the reaction that finishes the
      // stream may already have run, and gRPC may have freed the call.
      if (writing_ || finished_ || cancelled_ || watch_ == nullptr) return;
      absl::StatusOr<std::optional<v1::RoundResult>> next = watch_->Next();
      if (!next.ok()) {
        finished_ = true;
        // OUT_OF_RANGE: the run is finished and every round was written.
        finish = next.status().code() == absl::StatusCode::kOutOfRange
                     ? grpc::Status::OK
                     : ToGrpcStatus(next.status());
      } else if (!next->has_value()) {
        return;  // on_ready calls Pump again once a round is ready.
      } else {
        writing_ = true;
        message_ = SerializeMessage(**next);
      }
    }
    // Outside mu_: gRPC may run reactions inline from these calls.
    if (finish.has_value()) {
      Finish(*finish);
    } else {
      StartWrite(&message_);
    }
  }

  void OnWriteDone(bool ok) override {
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      // Decided under the lock that cleared writing_, so that an on_ready
      // Pump cannot start a write between here and Finish.
      if (cancelled_) finish_now = MarkFinishedLocked();
    }
    if (finish_now) {
      Finish(WatcherWentAway());
      return;
    }
    Pump();
  }

  void OnCancel() override {
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      // With a write in flight, OnWriteDone(false) finishes the stream.
      if (!writing_) finish_now = MarkFinishedLocked();
    }
    if (finish_now) Finish(WatcherWentAway());
  }

  void OnDone() override {
    // The RoundWatch goes with the reactor; it must not outlive the
    // Aggregator, which the server's Shutdown (waiting for every OnDone)
    // guarantees.
    bool delete_now;
    {
      absl::MutexLock lock(&link_->mu);
      link_->done = true;
      delete_now = link_->calls_inside == 0;
      if (delete_now) link_->reactor = nullptr;
    }
    if (delete_now) delete this;
  }

 private:
  static grpc::Status WatcherWentAway() {
    return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher went away");
  }

  // True (and marked) when nobody finished the stream yet.
  bool MarkFinishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return false;
    finished_ = true;
    return true;
  }

  void FinishOnce(grpc::Status status) {
    {
      absl::MutexLock lock(&mu_);
      if (!MarkFinishedLocked()) return;
    }
    Finish(std::move(status));
  }

  std::shared_ptr<Link> link_;
  absl::Mutex mu_;
  std::unique_ptr<RoundWatch> watch_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  // The message being written; stable while writing_.
  grpc::ByteBuffer message_;
};

}  // namespace

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
    aggregator_->Report(
        request_.report(), AggregatorDeadline(deadline, now),
        [this](absl::StatusOr<v1::RoundResult> result) {
          OnOutcome(std::move(result));
        });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED,
                              "the client went away"));
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

absl::Time AggregatorDeadline(absl::Time deadline, absl::Time now) {
  if (deadline == absl::InfiniteFuture()) return deadline;
  absl::Duration margin = (deadline - now) / 5;
  if (margin > CoordinatorService::kDeadlineMargin) {
    margin = CoordinatorService::kDeadlineMargin;
  }
  if (margin < absl::ZeroDuration()) margin = absl::ZeroDuration();
  return deadline - margin;
}

CoordinatorService::CoordinatorService(Aggregator* aggregator,
                                       const TokenAuthenticator* auth,
                                       CoordinatorMetrics* metrics,
                                       EventLog* log)
    : aggregator_(aggregator),
      auth_(auth),
      metrics_(metrics),
      log_(log),
      streams_(std::make_unique<StreamRegistry>()) {}

CoordinatorService::~CoordinatorService() = default;

void CoordinatorService::ShutdownStreams() { streams_->ShutdownAll(); }

absl::Status CoordinatorService::Authorize(grpc::CallbackServerContext* context,
                                           Permission permission) const {
  if (auth_ == nullptr) return absl::OkStatus();
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(std::string(kAuthorizationMetadataKey));
  absl::string_view header;
  if (it != metadata.end()) header = absl::string_view(it->second.data(), it->second.size());
  absl::Status status = auth_->Authorize(header, permission);
  uint64_t suppressed = 0;
  if (!status.ok() && log_ != nullptr &&
      auth_failures_.Allow(absl::Now(), &suppressed)) {
    log_->Log(LogLevel::kWarning, "auth_failed",
              {{"code", absl::StatusCodeToString(status.code())},
               {"peer", context->peer()},
               {"why", std::string(status.message())},
               {"suppressed", absl::StrCat(suppressed)}});
  }
  return status;
}

template <typename Request, typename Response, typename Handle>
grpc::ServerUnaryReactor* CoordinatorService::Unary(
    absl::string_view rpc, Permission permission,
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
    grpc::ByteBuffer* response_bytes, Handle handle) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Request request;
  absl::Status status = Authorize(context, permission);
  if (status.ok()) status = ParseRequest(rpc, *request_bytes, &request);
  if (status.ok()) {
    absl::StatusOr<Response> response = handle(request);
    if (response.ok()) *response_bytes = SerializeMessage(*response);
    status = response.status();
  }
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::RegisterRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::RegisterRunRequest, v1::RegisterRunResponse>(
      "RegisterRun", Permission::kReport, context, request, response,
      [this](const v1::RegisterRunRequest& r) {
        return aggregator_->RegisterRun(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::Report(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request_bytes,
    grpc::ByteBuffer* response) {
  auto* reactor = new ReportReactor(response, metrics_);
  v1::ReportRequest request;
  absl::Status status = Authorize(context, Permission::kReport);
  if (status.ok()) status = ParseRequest("Report", *request_bytes, &request);
  if (!status.ok()) {
    reactor->Reject(status);
    return reactor;
  }
  reactor->Start(aggregator_, request,
                 AggregatorDeadline(DeadlineOf(context), absl::Now()));
  return reactor;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
CoordinatorService::ReportStream(grpc::CallbackServerContext* context) {
  auto* reactor = new ReportStreamReactor(aggregator_, metrics_, streams_.get(),
                                          DeadlineOf(context));
  absl::Status status = Authorize(context, Permission::kReport);
  if (status.ok() && !streams_->Add(reactor)) {
    status = absl::UnavailableError(
        "the coordinator is shutting down; open the stream again on the "
        "restarted coordinator");
  }
  if (!status.ok()) {
    reactor->Reject(status);
    return reactor;
  }
  reactor->Start();
  return reactor;
}

grpc::ServerUnaryReactor* CoordinatorService::ListRuns(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::ListRunsRequest, v1::ListRunsResponse>(
      "ListRuns", Permission::kQuery, context, request, response,
      [this](const v1::ListRunsRequest&) {
        return absl::StatusOr<v1::ListRunsResponse>(aggregator_->ListRuns());
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetRunRequest, v1::GetRunResponse>(
      "GetRun", Permission::kQuery, context, request, response,
      [this](const v1::GetRunRequest& r) -> absl::StatusOr<v1::GetRunResponse> {
        absl::StatusOr<v1::RunInfo> run = aggregator_->GetRun(r.run_id());
        if (!run.ok()) return run.status();
        v1::GetRunResponse answer;
        *answer.mutable_run() = *std::move(run);
        return answer;
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetHistory(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetHistoryRequest, v1::GetHistoryResponse>(
      "GetHistory", Permission::kQuery, context, request, response,
      [this](const v1::GetHistoryRequest& r) {
        return aggregator_->GetHistory(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::GetSummary(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::GetSummaryRequest, v1::GetSummaryResponse>(
      "GetSummary", Permission::kQuery, context, request, response,
      [this](const v1::GetSummaryRequest& r) {
        return aggregator_->GetSummary(r);
      });
}

grpc::ServerUnaryReactor* CoordinatorService::FinishRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::FinishRunRequest, v1::FinishRunResponse>(
      "FinishRun", Permission::kReport, context, request, response,
      [this](const v1::FinishRunRequest& r) {
        return aggregator_->FinishRun(r.run_id());
      });
}

grpc::ServerUnaryReactor* CoordinatorService::DeleteRun(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Unary<v1::DeleteRunRequest, v1::DeleteRunResponse>(
      "DeleteRun", Permission::kAdmin, context, request, response,
      [this](const v1::DeleteRunRequest& r) {
        return aggregator_->DeleteRun(r.run_id());
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* CoordinatorService::WatchRun(
    grpc::CallbackServerContext* context,
    const grpc::ByteBuffer* request_bytes) {
  auto* reactor = new WatchReactor();
  v1::WatchRunRequest request;
  absl::Status status = Authorize(context, Permission::kQuery);
  if (status.ok()) status = ParseRequest("WatchRun", *request_bytes, &request);
  if (!status.ok()) {
    reactor->Reject(status);
    return reactor;
  }
  reactor->Start(aggregator_, request);
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
