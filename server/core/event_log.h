// The coordinator's operational log: one line per event an operator cares
// about (a run registered, a round that timed out, an authentication failure,
// start and shutdown), as logfmt key=value pairs, so that a log collector can
// parse it:
//
//   ts=2026-12-04T20:15:00.123456Z level=info event=run_registered run=r7
//   participants=2
//
// EventLog is the seam: StreamEventLog writes lines to a stream (stderr in
// the coordinator), InMemoryEventLog keeps them for tests. LogLimiter keeps
// an event that a client can cause at will (authentication failures) to a
// line per interval.
//
// Thread-safety: every EventLog and LogLimiter is safe to call from any
// thread.
#ifndef GRADNORM_SERVER_CORE_EVENT_LOG_H_
#define GRADNORM_SERVER_CORE_EVENT_LOG_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {

enum class LogLevel { kInfo = 0, kWarning = 1, kError = 2, kOff = 3 };

// "info", "warning", "error" or "off"; INVALID_ARGUMENT otherwise.
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

using LogFields = std::vector<std::pair<std::string, std::string>>;

// One line (without the newline): ts, level, event, then `fields` in order.
// Values with spaces, quotes or '=' are quoted, with \" and \\ escaped.
std::string FormatEvent(absl::Time time, LogLevel level,
                        absl::string_view event, const LogFields& fields);

class EventLog {
 public:
  virtual ~EventLog() = default;
  virtual void Log(LogLevel level, absl::string_view event,
                   const LogFields& fields) = 0;
};

// Writes each event at or above `min_level` as one line to `out` (not owned;
// flushed after each line).
class StreamEventLog : public EventLog {
 public:
  StreamEventLog(std::FILE* out, LogLevel min_level)
      : out_(out), min_level_(min_level) {}
  void Log(LogLevel level, absl::string_view event,
           const LogFields& fields) override;

 private:
  absl::Mutex mu_;
  std::FILE* const out_ ABSL_GUARDED_BY(mu_);
  const LogLevel min_level_;
};

// The in-memory twin: keeps every event's line.
class InMemoryEventLog : public EventLog {
 public:
  void Log(LogLevel level, absl::string_view event,
           const LogFields& fields) override;
  std::vector<std::string> lines() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<std::string> lines_ ABSL_GUARDED_BY(mu_);
};

// At most one event per `interval`: Allow(now) says whether to log one now,
// and how many were held back since the last one that was (to be logged with
// it as suppressed=N).
class LogLimiter {
 public:
  explicit LogLimiter(absl::Duration interval) : interval_(interval) {}
  // True (and the count held back before it) when an event may be logged.
  bool Allow(absl::Time now, uint64_t* suppressed);

 private:
  absl::Mutex mu_;
  const absl::Duration interval_;
  absl::Time last_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t held_back_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_EVENT_LOG_H_
