// Cancels a gRPC call that is still running at its deadline, for calls whose
// own gRPC deadline cannot be used: one Report on a long-lived ReportStream
// (the stream outlives every report's deadline).
//
//   CallWatchdog watchdog;
//   watchdog.Arm(stream_context, deadline);
//   bool ok = stream->Write(request) && stream->Read(&response);
//   if (watchdog.Disarm()) { /* cancelled at the deadline: drop the stream */ }
//
// One thread, started by the first Arm, sleeps until the armed deadline. Arm
// wakes it only when the new deadline is earlier than the one it sleeps
// toward, so a caller arming a similar deadline every step costs no wake-up
// per call (the thread wakes about once per deadline interval).
//
// Thread-safety: thread-safe; one call is armed at a time (Arm replaces it).
#ifndef GRADNORM_CLIENT_CALL_WATCHDOG_H_
#define GRADNORM_CLIENT_CALL_WATCHDOG_H_

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"

namespace gradnorm {

class CallWatchdog {
 public:
  CallWatchdog() = default;
  // Stops the thread; an armed call is left alone.
  ~CallWatchdog();

  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;

  // Watches `context` (which must stay valid until Disarm): TryCancel at
  // `deadline` unless disarmed first.
  void Arm(grpc::ClientContext* context, absl::Time deadline);

  // Stops watching; true when the call was cancelled at its deadline.
  bool Disarm();

 private:
  void Loop();
  bool Woken() const ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stop_ || rearm_; }

  absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  // When the thread wakes next on its own.
  absl::Time sleeping_until_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool rearm_ ABSL_GUARDED_BY(mu_) = false;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_CALL_WATCHDOG_H_
