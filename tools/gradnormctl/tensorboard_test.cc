#include "tools/gradnormctl/tensorboard.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "google/protobuf/unknown_field_set.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

using ::google::protobuf::UnknownField;
using ::google::protobuf::UnknownFieldSet;

uint64_t Fixed64(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

uint32_t Fixed32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i)
    v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

// Reads the TFRecords of `file`, checking both CRCs of each.
std::vector<std::string> ReadRecords(const std::string& file) {
  std::vector<std::string> records;
  size_t at = 0;
  while (at < file.size()) {
    EXPECT_GE(file.size() - at, 12u);
    const uint64_t length = Fixed64(file, at);
    EXPECT_EQ(Fixed32(file, at + 8), MaskedCrc32c(file.substr(at, 8)));
    const std::string data = file.substr(at + 12, length);
    EXPECT_EQ(data.size(), length);
    EXPECT_EQ(Fixed32(file, at + 12 + length), MaskedCrc32c(data));
    records.push_back(data);
    at += 12 + length + 4;
  }
  return records;
}

// An Event decoded with protobuf's own wire parser.
struct Event {
  double wall_time = 0;
  int64_t step = -1;
  std::string file_version;
  std::map<std::string, float> scalars;
};

Event Decode(const std::string& bytes) {
  Event event;
  UnknownFieldSet fields;
  EXPECT_TRUE(fields.ParseFromString(bytes));
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& f = fields.field(i);
    if (f.number() == 1) {
      const uint64_t bits = f.fixed64();
      std::memcpy(&event.wall_time, &bits, sizeof(bits));
    } else if (f.number() == 2) {
      event.step = static_cast<int64_t>(f.varint());
    } else if (f.number() == 3) {
      event.file_version = f.length_delimited();
    } else if (f.number() == 5) {
      UnknownFieldSet summary;
      EXPECT_TRUE(summary.ParseFromString(f.length_delimited()));
      for (int k = 0; k < summary.field_count(); ++k) {
        UnknownFieldSet value;
        EXPECT_TRUE(value.ParseFromString(summary.field(k).length_delimited()));
        std::string tag;
        float scalar = 0;
        for (int j = 0; j < value.field_count(); ++j) {
          if (value.field(j).number() == 1)
            tag = value.field(j).length_delimited();
          if (value.field(j).number() == 2) {
            const uint32_t bits = value.field(j).fixed32();
            std::memcpy(&scalar, &bits, sizeof(bits));
          }
        }
        event.scalars[tag] = scalar;
      }
    }
  }
  return event;
}

TEST(TensorBoardTest, Crc32cOfTheStandardVector) {
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(MaskedCrc32c(""), 0xa282ead8u);
}

TEST(TensorBoardTest, WritesAFramedEventPerRoundAfterTheVersion) {
  std::vector<v1::RoundResult> rounds(2);
  rounds[0].set_step(7);
  rounds[0].set_total_norm(2.5);
  rounds[0].set_clip_coef(0.4);
  rounds[0].set_effective_max_norm(1);
  rounds[0].set_action(v1::ACTION_CLIP);
  rounds[0].set_finalized_unix_micros(1'700'000'000'500'000);
  rounds[1].set_step(8);
  rounds[1].set_total_norm(std::numeric_limits<double>::quiet_NaN());
  rounds[1].set_clip_coef(1);
  rounds[1].set_effective_max_norm(1);
  rounds[1].set_action(v1::ACTION_SKIP);
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/tb/run";
  absl::StatusOr<std::string> path = WriteTensorBoardEvents(rounds, dir, "r1");
  ASSERT_TRUE(path.ok()) << path.status();
  EXPECT_NE(path->find(dir + "/events.out.tfevents."), std::string::npos);
  EXPECT_NE(path->find(".gradnorm.r1"), std::string::npos);
  std::ifstream in(*path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  const std::vector<std::string> records = ReadRecords(bytes.str());
  ASSERT_EQ(records.size(), 3u);
  const Event version = Decode(records[0]);
  EXPECT_EQ(version.file_version, "brain.Event:2");
  EXPECT_GT(version.wall_time, 1.7e9);
  const Event first = Decode(records[1]);
  EXPECT_EQ(first.step, 7);
  EXPECT_DOUBLE_EQ(first.wall_time, 1'700'000'000.5);
  EXPECT_EQ(first.scalars.at("grad_norm/total"), 2.5f);
  EXPECT_EQ(first.scalars.at("grad_norm/clip_coef"), 0.4f);
  EXPECT_EQ(first.scalars.at("grad_norm/effective_max_norm"), 1.0f);
  EXPECT_EQ(first.scalars.at("grad_norm/skipped"), 0.0f);
  const Event second = Decode(records[2]);
  EXPECT_EQ(second.step, 8);
  EXPECT_TRUE(std::isnan(second.scalars.at("grad_norm/total")));
  EXPECT_EQ(second.scalars.at("grad_norm/skipped"), 1.0f);
}

TEST(TensorBoardTest, BadDirectoriesAreErrors) {
  EXPECT_EQ(WriteTensorBoardEvents({}, "", "r").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      WriteTensorBoardEvents({}, "/proc/gradnorm-no", "r").status().code(),
      absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace gradnormctl
}  // namespace gradnorm
