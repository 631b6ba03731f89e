#include "server/rpc/wire_message.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

TEST(WireMessageTest, RoundTripsThroughOneAndManySlices) {
  v1::ReportRequest report;
  report.set_run_id("r");
  report.set_step(12);
  report.set_partial(0.5);
  const std::string bytes = report.SerializeAsString();
  v1::ReportRequest parsed;
  ASSERT_TRUE(ParseRequest("Report", SerializeMessage(report), &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), bytes);

  // gRPC may hand a message over in several slices.
  std::vector<grpc::Slice> slices;
  for (char c : bytes) slices.emplace_back(&c, 1);
  grpc::ByteBuffer split(slices.data(), slices.size());
  parsed.set_step(99);
  ASSERT_TRUE(ParseRequest("Report", split, &parsed).ok());
  EXPECT_EQ(parsed.SerializeAsString(), bytes);
}

TEST(WireMessageTest, BadBytesNameTheRpcTheSizeAndTheType) {
  v1::GetHistoryRequest request;
  absl::Status status =
      ParseRequest("GetHistory", std::string("\xff\xff\x01", 3), &request);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("GetHistory: the request (3 bytes) does not parse as "
                        "gradnorm.v1.GetHistoryRequest"));
  // A message cut short is no message either.
  v1::ReportRequest report;
  report.set_run_id("a-run-id");
  const std::string bytes = report.SerializeAsString();
  EXPECT_EQ(
      ParseRequest("Report", bytes.substr(0, bytes.size() - 2), &report).code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(WireMessageTest, EmptyBytesAreTheEmptyMessage) {
  v1::GetRunRequest request;
  request.set_run_id("stale");
  ASSERT_TRUE(ParseRequest("GetRun", std::string(), &request).ok());
  EXPECT_EQ(request.run_id(), "");
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
