#include "server/rpc/protobuf_log.h"

#include <string>

#include "gmock/gmock.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::MatchesRegex;

// A RegisterRunRequest whose run_id (field 1) holds the bytes ff fe: not UTF-8.
std::string BadUtf8Request() { return std::string("\x0a\x02\xff\xfe", 4); }

TEST(ProtobufLogTest, ParseWarningsBecomeOneRateLimitedLine) {
  InMemoryEventLog log;
  RouteProtobufLogs(&log);
  v1::RegisterRunRequest request;
  EXPECT_FALSE(request.ParseFromString(BadUtf8Request()));
  EXPECT_FALSE(request.ParseFromString(BadUtf8Request()));
  RouteProtobufLogs(nullptr);
  ASSERT_EQ(log.lines().size(), 1u);
  EXPECT_THAT(log.lines()[0],
              MatchesRegex(
                  ".* level=warning event=protobuf_message message=\".*run_id.*"
                  "invalid UTF-8.*\" source=.* suppressed=0"));
  // Unrouted, nothing more reaches the log.
  EXPECT_FALSE(request.ParseFromString(BadUtf8Request()));
  EXPECT_EQ(log.lines().size(), 1u);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
