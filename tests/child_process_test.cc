#include "tests/child_process.h"

#include <signal.h>

#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

TEST(ChildProcessTest, CapturesOutputAndExitCode) {
  const std::string log = TempPath("echo.log");
  auto child = ChildProcess::Start({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, log);
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<int> code = (*child)->Wait(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 3);
  EXPECT_EQ(ReadWholeFile(log), "out\nerr\n");
  EXPECT_EQ(LastLinesOf(log, 1), "    err\n");
}

TEST(ChildProcessTest, KillsAChildPastItsDeadline) {
  auto child = ChildProcess::Start({"/bin/sleep", "30"}, TempPath("sleep.log"));
  ASSERT_TRUE(child.ok()) << child.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<int> code = (*child)->Wait(start + absl::Milliseconds(200));
  EXPECT_EQ(code.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST(ChildProcessTest, ReportsTheSignalThatEndedIt) {
  auto child = ChildProcess::Start({"/bin/sleep", "30"}, TempPath("term.log"));
  ASSERT_TRUE(child.ok()) << child.status();
  (*child)->Signal(SIGTERM);
  absl::StatusOr<int> code = (*child)->Wait(absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGTERM);
}

TEST(ChildProcessTest, MissingBinaryIsAnError) {
  auto child = ChildProcess::Start({"/nonexistent/binary"}, TempPath("missing.log"));
  // posix_spawn may fail up front, or the child exits 127 after exec fails.
  if (child.ok()) {
    absl::StatusOr<int> code = (*child)->Wait(absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 127);
  } else {
    EXPECT_EQ(child.status().code(), absl::StatusCode::kInternal);
  }
}

}  // namespace
}  // namespace gradnorm
