#include "server/core/event_log.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace gradnorm {
namespace server {
namespace {

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
    case LogLevel::kOff:
      break;
  }
  return "off";
}

void AppendValue(std::string* line, absl::string_view value) {
  const bool quote = value.empty() || value.find_first_of(" \"=\\\t\n") !=
                                          absl::string_view::npos;
  if (!quote) {
    absl::StrAppend(line, value);
    return;
  }
  line->push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') line->push_back('\\');
    if (c == '\n') {
      line->append("\\n");
      continue;
    }
    line->push_back(c);
  }
  line->push_back('"');
}

}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower == "info") return LogLevel::kInfo;
  if (lower == "warning") return LogLevel::kWarning;
  if (lower == "error") return LogLevel::kError;
  if (lower == "off") return LogLevel::kOff;
  return absl::InvalidArgumentError(
      absl::StrCat("log level '", name,
                   "' is unknown; expected info, warning, error or off"));
}

std::string FormatEvent(absl::Time time, LogLevel level,
                        absl::string_view event, const LogFields& fields) {
  std::string line = absl::StrCat(
      "ts=",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone()),
      " level=", LevelName(level), " event=");
  AppendValue(&line, event);
  for (const auto& [key, value] : fields) {
    absl::StrAppend(&line, " ", key, "=");
    AppendValue(&line, value);
  }
  return line;
}

void StreamEventLog::Log(LogLevel level, absl::string_view event,
                         const LogFields& fields) {
  if (level < min_level_ || min_level_ == LogLevel::kOff) return;
  const std::string line = FormatEvent(absl::Now(), level, event, fields);
  absl::MutexLock lock(&mu_);
  std::fprintf(out_, "%s\n", line.c_str());
  std::fflush(out_);
}

void InMemoryEventLog::Log(LogLevel level, absl::string_view event,
                           const LogFields& fields) {
  std::string line = FormatEvent(absl::Now(), level, event, fields);
  absl::MutexLock lock(&mu_);
  lines_.push_back(std::move(line));
}

std::vector<std::string> InMemoryEventLog::lines() const {
  absl::MutexLock lock(&mu_);
  return lines_;
}

bool LogLimiter::Allow(absl::Time now, uint64_t* suppressed) {
  absl::MutexLock lock(&mu_);
  if (now - last_ < interval_) {
    ++held_back_;
    return false;
  }
  last_ = now;
  *suppressed = held_back_;
  held_back_ = 0;
  return true;
}

}  // namespace server
}  // namespace gradnorm
