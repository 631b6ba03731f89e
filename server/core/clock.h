// The coordinator's source of time: an interface with the real clock and a
// manually advanced fake for deterministic tests.
//
//   FakeClock clock(absl::FromUnixSeconds(1000));
//   auto aggregator = Aggregator::Create(options, &store, &clock);
//   clock.Advance(absl::Seconds(61));
//   aggregator->ExpireRounds();  // rounds older than their timeout now fail
//
// Thread-safety: every method of every implementation may be called from any
// thread concurrently.
#ifndef GRADNORM_SERVER_CORE_CLOCK_H_
#define GRADNORM_SERVER_CORE_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {

class Clock {
 public:
  virtual ~Clock() = default;

  // The current time. Never decreases for the real clock's callers that only
  // compare durations over seconds; the fake returns exactly what it was set
  // to.
  virtual absl::Time Now() const = 0;

  // The process-wide real clock (absl::Now()). Never null, never destroyed.
  static Clock* Real();
};

// absl::Now().
class RealClock final : public Clock {
 public:
  absl::Time Now() const override;
};

// A clock that stands still until the test moves it.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1700000000));

  absl::Time Now() const override;

  // Moves the clock forward by `delta` (negative deltas move it back; tests of
  // clock skew may want that).
  void Advance(absl::Duration delta);
  // Sets the clock to `now`.
  void Set(absl::Time now);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_CLOCK_H_
