#include "server/rpc/watch_reactor.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/grpc_status.h"
#include "server/rpc/wire_message.h"

namespace gradnorm {
namespace server {
namespace {

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

grpc::ServerWriteReactor<grpc::ByteBuffer>* NewWatchReactor(
    Aggregator* aggregator, const absl::Status& rejected,
    const v1::WatchRunRequest& request) {
  auto* reactor = new WatchReactor();
  if (!rejected.ok()) {
    reactor->Reject(rejected);
  } else {
    reactor->Start(aggregator, request);
  }
  return reactor;
}

}  // namespace server
}  // namespace gradnorm
