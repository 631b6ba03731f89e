#include "server/core/event_log.h"

#include <cstdio>
#include <string>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::ElementsAre;
using ::testing::MatchesRegex;

TEST(EventLogTest, FormatsLogfmtWithQuotingWhereNeeded) {
  const absl::Time t = absl::FromUnixMicros(1796414100123456);
  EXPECT_EQ(FormatEvent(t, LogLevel::kWarning, "round_timed_out",
                        {{"run", "r7"},
                         {"missing", "1, 4"},
                         {"why", "said \"no\" = \\ "},
                         {"empty", ""}}),
            "ts=2026-12-04T19:55:00.123456Z level=warning "
            "event=round_timed_out run=r7 missing=\"1, 4\" "
            "why=\"said \\\"no\\\" = \\\\ \" empty=\"\"");
}

TEST(EventLogTest, ParsesLevels) {
  EXPECT_EQ(*ParseLogLevel("INFO"), LogLevel::kInfo);
  EXPECT_EQ(*ParseLogLevel("warning"), LogLevel::kWarning);
  EXPECT_EQ(*ParseLogLevel("error"), LogLevel::kError);
  EXPECT_EQ(*ParseLogLevel("off"), LogLevel::kOff);
  absl::StatusOr<LogLevel> bad = ParseLogLevel("debug");
  EXPECT_EQ(bad.status(), absl::InvalidArgumentError(
                              "log level 'debug' is unknown; expected info, "
                              "warning, error or off"));
}

TEST(EventLogTest, StreamLogDropsLevelsBelowItsMinimum) {
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  StreamEventLog log(out, LogLevel::kWarning);
  log.Log(LogLevel::kInfo, "run_registered", {{"run", "a"}});
  log.Log(LogLevel::kWarning, "round_timed_out", {{"run", "b"}});
  std::rewind(out);
  char buffer[512] = {};
  const size_t n = std::fread(buffer, 1, sizeof(buffer) - 1, out);
  std::fclose(out);
  EXPECT_THAT(std::string(buffer, n),
              MatchesRegex("ts=[-0-9T:.]+Z level=warning event=round_timed_out "
                           "run=b\n"));
}

TEST(EventLogTest, InMemoryLogKeepsLines) {
  InMemoryEventLog log;
  log.Log(LogLevel::kInfo, "start", {{"version", "1"}});
  ASSERT_EQ(log.lines().size(), 1u);
  EXPECT_THAT(log.lines()[0],
              MatchesRegex(".* level=info event=start version=1"));
}

TEST(LogLimiterTest, OneEventPerIntervalWithTheCountHeldBack) {
  LogLimiter limiter(absl::Seconds(1));
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  uint64_t suppressed = 99;
  EXPECT_TRUE(limiter.Allow(t0, &suppressed));
  EXPECT_EQ(suppressed, 0u);
  EXPECT_FALSE(limiter.Allow(t0 + absl::Milliseconds(10), &suppressed));
  EXPECT_FALSE(limiter.Allow(t0 + absl::Milliseconds(999), &suppressed));
  EXPECT_TRUE(limiter.Allow(t0 + absl::Seconds(1), &suppressed));
  EXPECT_EQ(suppressed, 2u);
  EXPECT_TRUE(limiter.Allow(t0 + absl::Seconds(5), &suppressed));
  EXPECT_EQ(suppressed, 0u);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
