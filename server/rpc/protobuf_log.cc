#include "server/rpc/protobuf_log.h"

#include <atomic>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "google/protobuf/stubs/logging.h"

namespace gradnorm {
namespace server {
namespace {

std::atomic<EventLog*> routed_to{nullptr};

LogLimiter& Limiter() {
  static LogLimiter* limiter = new LogLimiter(absl::Seconds(1));
  return *limiter;
}

void Handle(google::protobuf::LogLevel level, const char* filename, int line,
            const std::string& message) {
  EventLog* log = routed_to.load();
  if (log == nullptr) return;
  uint64_t suppressed = 0;
  if (!Limiter().Allow(absl::Now(), &suppressed)) return;
  log->Log(level == google::protobuf::LOGLEVEL_FATAL ? LogLevel::kError
                                                     : LogLevel::kWarning,
           "protobuf_message",
           {{"message", message},
            {"source", absl::StrCat(filename, ":", line)},
            {"suppressed", absl::StrCat(suppressed)}});
}

}  // namespace

void RouteProtobufLogs(EventLog* log) {
  routed_to.store(log);
  google::protobuf::SetLogHandler(log == nullptr ? nullptr : &Handle);
}

}  // namespace server
}  // namespace gradnorm
