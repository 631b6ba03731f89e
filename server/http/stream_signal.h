// Wakes a long-lived HTTP response (a Server-Sent Events stream) that waits
// for news, and tells it when the server stops.
//
//   auto signal = std::make_shared<StreamSignal>();
//   watch = aggregator->Watch(run, 0, [signal] { signal->Notify(); });
//   while (signal->WaitFor(absl::Seconds(15)) != StreamSignal::kCancelled) {
//     ... drain the watch, write events ...
//   }
//
// Thread-safety: every method may be called from any thread.
#ifndef GRADNORM_SERVER_HTTP_STREAM_SIGNAL_H_
#define GRADNORM_SERVER_HTTP_STREAM_SIGNAL_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {

class StreamSignal {
 public:
  enum Wake { kNotified, kTimedOut, kCancelled };

  // Wakes the current or the next WaitFor (notifications do not pile up).
  void Notify() {
    absl::MutexLock lock(&mu_);
    notified_ = true;
  }

  // Ends the stream: every WaitFor from now on returns kCancelled at once.
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }

  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

  // Waits up to `timeout` for Notify or Cancel; clears the notification.
  Wake WaitFor(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(this, &StreamSignal::Woken), timeout);
    if (cancelled_) return kCancelled;
    if (!notified_) return kTimedOut;
    notified_ = false;
    return kNotified;
  }

 private:
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return notified_ || cancelled_;
  }

  mutable absl::Mutex mu_;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_STREAM_SIGNAL_H_
