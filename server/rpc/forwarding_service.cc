#include "server/rpc/forwarding_service.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <utility>

#include "absl/strings/match.h"
#include "absl/time/clock.h"

namespace gradnorm {
namespace server {

// One forwarded call: the client's (downstream) call and the call to the
// holder (upstream), pumped message by message: a message read from one side
// is written to the other before the next is read. Every reaction of either
// side becomes an event handled one at a time by Drain, outside any lock, so
// the handlers may start operations whose reactions run inline. The upstream
// call keeps two holds: one while writes may still be started (released when
// the client half-closes or a write fails), one while reads may (released
// when the holder's stream ends or the client's side breaks); so no
// operation is ever started after its OnDone. When the holder's stream ends
// first (it died, or ended the call), both holds go at once: a client that
// keeps its stream open (ReportStream) gets the holder's status.
class ForwardedCall final : public grpc::ServerGenericBidiReactor {
 public:
  ForwardedCall(ForwardingService* service,
                grpc::GenericCallbackServerContext* context)
      : service_(service), context_(context), client_(this) {
    absl::Time deadline = absl::Now() + service->options_.max_wait;
    if (context->deadline() != std::chrono::system_clock::time_point::max()) {
      deadline = std::min(deadline, absl::FromChrono(context->deadline()));
    }
    service->options_.directory->Lookup(
        deadline, [this](absl::StatusOr<std::string> address) {
          Event event{Kind::kLookedUp};
          event.address = std::move(address);
          Post(std::move(event));
        });
  }

  void OnReadDone(bool ok) override { Post({Kind::kDownRead, ok}); }
  void OnWriteDone(bool ok) override { Post({Kind::kDownWritten, ok}); }
  void OnCancel() override { Post({Kind::kDownCancelled}); }
  void OnDone() override { Post({Kind::kDownDone}); }

 private:
  enum class Kind {
    kLookedUp,
    kDownRead,
    kDownWritten,
    kDownCancelled,
    kDownDone,
    kUpRead,
    kUpWritten,
    kUpDone,
  };
  struct Event {
    Kind kind;
    bool ok = false;
    absl::StatusOr<std::string> address = std::string();
    grpc::Status status;
  };

  class Client final
      : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Client(ForwardedCall* call) : call_(call) {}
    void OnReadDone(bool ok) override { call_->Post({Kind::kUpRead, ok}); }
    void OnWriteDone(bool ok) override { call_->Post({Kind::kUpWritten, ok}); }
    void OnDone(const grpc::Status& status) override {
      Event event{Kind::kUpDone};
      event.status = status;
      call_->Post(std::move(event));
    }

   private:
    ForwardedCall* const call_;
  };

  void Post(Event event) {
    {
      absl::MutexLock lock(&mu_);
      events_.push_back(std::move(event));
      if (draining_) return;
      draining_ = true;
    }
    Drain();
  }

  void Drain() {
    for (;;) {
      Event event{Kind::kDownDone};
      {
        absl::MutexLock lock(&mu_);
        if (events_.empty()) {
          draining_ = false;
          // The directory's answer may still come while a lookup is
          // pending: the call lives until then.
          if (down_done_ && !lookup_pending_ && (!started_ || up_done_)) {
            break;
          }
          return;
        }
        event = std::move(events_.front());
        events_.pop_front();
      }
      Handle(std::move(event));
    }
    delete this;
  }

  void Handle(Event event) {
    switch (event.kind) {
      case Kind::kLookedUp:
        lookup_pending_ = false;
        if (down_finished_) {
          // Cancelled while it waited: already answered.
        } else if (!event.address.ok()) {
          FinishDown(
              grpc::Status(grpc::StatusCode::UNAVAILABLE,
                           std::string(event.address.status().message())));
        } else if (cancelled_) {
          FinishDown(grpc::Status(grpc::StatusCode::CANCELLED,
                                  "cancelled by the client"));
        } else {
          Start(*event.address);
        }
        break;
      case Kind::kDownRead:
        if (event.ok && write_hold_) {
          to_up_.Swap(&from_down_);
          client_.StartWrite(&to_up_);
        } else if (!event.ok && write_hold_) {
          // The client half-closed (or went away): so does the forwarded call.
          client_.StartWritesDone();
          ReleaseWriteHold();
        }
        break;
      case Kind::kUpWritten:
        if (event.ok && !down_finished_) {
          StartRead(&from_down_);
        } else {
          ReleaseWriteHold();
        }
        break;
      case Kind::kUpRead:
        if (event.ok && !down_finished_) {
          to_down_.Swap(&from_up_);
          down_writing_ = true;
          StartWrite(&to_down_);
        } else {
          // The holder's stream ended: its status follows in kUpDone, once
          // both holds are gone. Nothing more is written to it: what the
          // client still sends is dropped, and the client gets that status.
          ReleaseReadHold();
          ReleaseWriteHold();
        }
        break;
      case Kind::kDownWritten:
        down_writing_ = false;
        if (up_done_) {
          FinishDown(up_status_);
        } else if (event.ok && read_hold_) {
          client_.StartRead(&from_up_);
        } else {
          // The client is gone: end the forwarded call.
          context_for_upstream_.TryCancel();
          ReleaseReadHold();
        }
        break;
      case Kind::kUpDone:
        up_done_ = true;
        up_status_ = event.status;
        if (up_status_.error_code() == grpc::StatusCode::UNAVAILABLE) {
          service_->Failed(address_, upstream_.get());
        }
        if (!down_writing_) FinishDown(up_status_);
        break;
      case Kind::kDownCancelled:
        cancelled_ = true;
        if (started_ && !up_done_) context_for_upstream_.TryCancel();
        // Still waiting for a holder: answer now (a server shutting down
        // cancels its calls) rather than at the lookup's deadline.
        if (lookup_pending_) {
          FinishDown(grpc::Status(grpc::StatusCode::CANCELLED,
                                  "cancelled while waiting for a holder"));
        }
        break;
      case Kind::kDownDone:
        down_done_ = true;
        break;
    }
  }

  void Start(const std::string& address) {
    address_ = address;
    upstream_ = service_->UpstreamFor(ParseAdvertised(address).grpc);
    for (const auto& [key, value] : context_->client_metadata()) {
      const absl::string_view name(key.data(), key.size());
      // gRPC's own headers are made again by the forwarded call.
      if (absl::StartsWith(name, ":") || absl::StartsWith(name, "grpc-") ||
          name == "user-agent" || name == "content-type" || name == "te" ||
          name == "host") {
        continue;
      }
      context_for_upstream_.AddMetadata(
          std::string(name), std::string(value.data(), value.size()));
    }
    if (context_->deadline() != std::chrono::system_clock::time_point::max()) {
      context_for_upstream_.set_deadline(context_->deadline());
    }
    upstream_->stub->PrepareBidiStreamingCall(&context_for_upstream_,
                                              std::string(context_->method()),
                                              grpc::StubOptions(), &client_);
    started_ = true;
    write_hold_ = read_hold_ = true;
    client_.AddMultipleHolds(2);
    client_.StartRead(&from_up_);
    client_.StartCall();
    StartRead(&from_down_);
    ++service_->forwarded_;
  }

  void FinishDown(const grpc::Status& status) {
    if (down_finished_) return;
    down_finished_ = true;
    Finish(status);
  }
  void ReleaseWriteHold() {
    if (!write_hold_) return;
    write_hold_ = false;
    client_.RemoveHold();
  }
  void ReleaseReadHold() {
    if (!read_hold_) return;
    read_hold_ = false;
    client_.RemoveHold();
  }

  ForwardingService* const service_;
  grpc::GenericCallbackServerContext* const context_;
  Client client_;

  absl::Mutex mu_;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;

  // Touched by Handle only (one event at a time); started_, up_done_ and
  // down_done_ are also read by Drain under mu_ after Handle wrote them
  // under the same mutex's ordering.
  std::string address_;
  std::shared_ptr<ForwardingService::Upstream> upstream_;
  grpc::ClientContext context_for_upstream_;
  grpc::ByteBuffer from_down_, to_up_, from_up_, to_down_;
  bool lookup_pending_ = true;
  bool started_ = false;
  bool write_hold_ = false;
  bool read_hold_ = false;
  bool cancelled_ = false;
  bool down_writing_ = false;
  bool down_finished_ = false;
  bool down_done_ = false;
  bool up_done_ = false;
  grpc::Status up_status_;
};

ForwardingService::ForwardingService(ForwardingOptions options)
    : options_(std::move(options)) {}

ForwardingService::~ForwardingService() = default;

grpc::ServerGenericBidiReactor* ForwardingService::CreateReactor(
    grpc::GenericCallbackServerContext* context) {
  return new ForwardedCall(this, context);
}

std::shared_ptr<ForwardingService::Upstream> ForwardingService::UpstreamFor(
    const std::string& address) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<Upstream>& upstream = upstreams_[address];
  if (upstream == nullptr) {
    grpc::ChannelArguments args;
    // The replica's own limit already applies to what it received.
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10 * 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10 * 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    if (!options_.server_name.empty()) {
      args.SetSslTargetNameOverride(options_.server_name);
    }
    upstream = std::make_shared<Upstream>();
    upstream->channel = grpc::CreateCustomChannel(
        address,
        options_.credentials != nullptr ? options_.credentials
                                        : grpc::InsecureChannelCredentials(),
        args);
    upstream->stub = std::make_unique<grpc::GenericStub>(upstream->channel);
  }
  return upstream;
}

void ForwardingService::Failed(const std::string& advertised,
                               const Upstream* upstream) {
  {
    absl::MutexLock lock(&mu_);
    auto it = upstreams_.find(ParseAdvertised(advertised).grpc);
    if (it != upstreams_.end() && it->second.get() == upstream) {
      upstreams_.erase(it);
    }
  }
  options_.directory->Forget(advertised);
}

}  // namespace server
}  // namespace gradnorm
