#include "server/store/postgres_dsn.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

std::string WriteFile(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir ? dir : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(PostgresDsnTest, InlineOrFromAFileWithoutItsNewline) {
  EXPECT_EQ(*PostgresDsnFromFlags("host=db", ""), "host=db");
  const std::string file = WriteFile("dsn", "host=db password=s3cret\n");
  EXPECT_EQ(*PostgresDsnFromFlags("", file), "host=db password=s3cret");
}

TEST(PostgresDsnTest, SaysWhatIsWrong) {
  absl::StatusOr<std::string> both = PostgresDsnFromFlags("a", "b");
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.status().message(), HasSubstr("both set"));
  absl::StatusOr<std::string> neither = PostgresDsnFromFlags("", "");
  EXPECT_EQ(neither.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(neither.status().message(), HasSubstr("needs --postgres_dsn"));
  absl::StatusOr<std::string> missing =
      PostgresDsnFromFlags("", "/nonexistent/dsn");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.status().message(), HasSubstr("/nonexistent/dsn"));
  absl::StatusOr<std::string> empty =
      PostgresDsnFromFlags("", WriteFile("empty", " \n"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
