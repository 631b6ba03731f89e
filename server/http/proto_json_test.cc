#include "server/http/proto_json.h"

#include <limits>

#include "gradnorm/v1/coordinator.pb.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(ProtoJsonTest, EveryFieldPresentWithProtoNames) {
  v1::HistoryBucket bucket;
  bucket.set_first_step(3);
  EXPECT_EQ(ToJson(bucket),
            "{\"first_step\":3,\"last_step\":0,\"rounds\":0,\"min_norm\":0,"
            "\"max_norm\":0,\"mean_norm\":0,\"last_norm\":0,\"clipped\":0,"
            "\"skipped\":0,\"max_arrival_spread_seconds\":0,"
            "\"first_finalized_unix_micros\":0,"
            "\"last_finalized_unix_micros\":0,\"effective_max_norm\":0,"
            "\"skipped_nonfinite\":0,\"skipped_spike\":0}");
}

TEST(ProtoJsonTest, SixtyFourBitIntegersAreNumbersWhereADoubleHoldsThem) {
  v1::HistoryBucket bucket;
  bucket.set_first_step(uint64_t{1} << 53);
  bucket.set_last_step((uint64_t{1} << 53) + 1);
  bucket.set_first_finalized_unix_micros(-1'700'000'000'000'000);
  const std::string json = ToJson(bucket);
  EXPECT_NE(json.find("\"first_step\":9007199254740992,"), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"last_step\":\"9007199254740993\","), std::string::npos)
      << json;
  EXPECT_NE(json.find("\"first_finalized_unix_micros\":-1700000000000000,"),
            std::string::npos)
      << json;
}

TEST(ProtoJsonTest, NonFiniteDoublesEnumsStringsAndRepeatedMessages) {
  v1::GetHistoryResponse history;
  history.add_buckets()->set_min_norm(std::numeric_limits<double>::quiet_NaN());
  history.add_buckets()->set_max_norm(std::numeric_limits<double>::infinity());
  history.set_downsampled(true);
  const std::string json = ToJson(history);
  EXPECT_NE(json.find("\"min_norm\":\"NaN\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"max_norm\":\"Infinity\""), std::string::npos) << json;
  EXPECT_NE(json.find("},{"), std::string::npos) << json;
  EXPECT_NE(json.find("\"downsampled\":true}"), std::string::npos) << json;

  v1::RoundResult round;
  round.set_run_id("a\"b\\c\n");
  round.set_action(v1::ACTION_CLIP);
  round.set_total_norm(0.1);
  const std::string r = ToJson(round);
  EXPECT_NE(r.find("\"run_id\":\"a\\\"b\\\\c\\n\""), std::string::npos) << r;
  EXPECT_NE(r.find("\"action\":\"ACTION_CLIP\""), std::string::npos) << r;
  EXPECT_NE(r.find("\"total_norm\":0.1,"), std::string::npos) << r;
}

TEST(ProtoJsonTest, OnlyTheSetMemberOfAOneofAppears) {
  v1::RunConfig config;
  config.mutable_clip_policy()->mutable_zclip()->set_alpha(0.97);
  const std::string json = ToJson(config);
  EXPECT_NE(json.find("\"clip_policy\":{\"zclip\":{"), std::string::npos)
      << json;
  EXPECT_EQ(json.find("auto_clip"), std::string::npos) << json;
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
