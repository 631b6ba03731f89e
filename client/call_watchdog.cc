#include "client/call_watchdog.h"

#include "absl/time/clock.h"

namespace gradnorm {

CallWatchdog::~CallWatchdog() {
  std::thread thread;
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
    thread = std::move(thread_);
  }
  if (thread.joinable()) thread.join();
}

void CallWatchdog::Arm(grpc::ClientContext* context, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  context_ = context;
  deadline_ = deadline;
  fired_ = false;
  if (!thread_.joinable()) {
    thread_ = std::thread([this] { Loop(); });
  } else if (deadline < sleeping_until_) {
    rearm_ = true;  // Wakes the thread when mu_ is released.
  }
}

bool CallWatchdog::Disarm() {
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
  return fired_;
}

void CallWatchdog::Loop() {
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    if (context_ != nullptr && absl::Now() >= deadline_) {
      context_->TryCancel();
      context_ = nullptr;
      fired_ = true;
    }
    // With nothing armed it sleeps until an Arm wakes it; with a call armed,
    // until that call's deadline, even if later Arms move the deadline on
    // (it then sleeps again toward the newer one).
    sleeping_until_ = context_ != nullptr ? deadline_ : absl::InfiniteFuture();
    rearm_ = false;
    mu_.AwaitWithDeadline(absl::Condition(this, &CallWatchdog::Woken),
                          sleeping_until_);
  }
}

}  // namespace gradnorm
