#include "server/store/participant_codec.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

uint64_t Bits(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

TEST(ParticipantCodecTest, RoundTripsEveryValueBitForBit) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<ParticipantRecord> in = {
      {2.5, 0.0, 1000},
      {nan, 0.125, 0},
      {std::numeric_limits<double>::infinity(), 3.75, (uint64_t{1} << 63) + 5},
      {-0.0, 1e-9, 1},
      {std::numeric_limits<double>::denorm_min(), 0.5, 7},
  };
  const std::string blob = EncodeParticipants(in);
  ASSERT_EQ(blob.size(), in.size() * kParticipantBlobBytes);
  absl::StatusOr<std::vector<ParticipantRecord>> out = DecodeParticipants(blob);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(Bits((*out)[i].partial), Bits(in[i].partial)) << i;
    EXPECT_EQ(Bits((*out)[i].arrival_offset_seconds),
              Bits(in[i].arrival_offset_seconds))
        << i;
    EXPECT_EQ((*out)[i].num_elements, in[i].num_elements) << i;
  }
}

TEST(ParticipantCodecTest, LayoutIsLittleEndianTriples) {
  const std::string blob = EncodeParticipants({{1.0, 0.5, 0x0102030405060708}});
  // 1.0 = 0x3FF0000000000000, 0.5 = 0x3FE0000000000000.
  const std::string expected(
      "\0\0\0\0\0\0\xF0\x3F"
      "\0\0\0\0\0\0\xE0\x3F"
      "\x08\x07\x06\x05\x04\x03\x02\x01",
      24);
  EXPECT_EQ(blob, expected);
}

TEST(ParticipantCodecTest, EmptyBlobIsNoParticipants) {
  absl::StatusOr<std::vector<ParticipantRecord>> out = DecodeParticipants("");
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->empty());
}

TEST(ParticipantCodecTest, TruncatedBlobIsDataLoss) {
  std::string blob = EncodeParticipants({{1.0, 0.0, 1}, {2.0, 0.1, 2}});
  blob.pop_back();
  absl::StatusOr<std::vector<ParticipantRecord>> out = DecodeParticipants(blob);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(out.status().message(),
              HasSubstr("47 bytes; expected a multiple of 24"));
}

TEST(ParticipantCodecTest, ImpossibleArrivalOffsetIsDataLoss) {
  for (double offset : {-1.0, std::numeric_limits<double>::quiet_NaN(),
                        std::numeric_limits<double>::infinity()}) {
    const std::string blob =
        EncodeParticipants({{1.0, 0.0, 1}, {2.0, offset, 2}});
    absl::StatusOr<std::vector<ParticipantRecord>> out =
        DecodeParticipants(blob);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kDataLoss) << offset;
    EXPECT_THAT(out.status().message(),
                HasSubstr("participant 1 has arrival offset"));
  }
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
