#include "common/child_process.h"

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
  auto child = ChildProcess::Start(
      {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, log);
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
  auto child =
      ChildProcess::Start({"/nonexistent/binary"}, TempPath("missing.log"));
  // posix_spawn may fail up front, or the child exits 127 after exec fails.
  if (child.ok()) {
    absl::StatusOr<int> code = (*child)->Wait(absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, 127);
  } else {
    EXPECT_EQ(child.status().code(), absl::StatusCode::kInternal);
  }
}

TEST(ChildProcessTest, SetsEnvironmentVariablesOverTheParents) {
  setenv("GRADNORM_CHILD_TEST_KEPT", "kept", 1);
  setenv("GRADNORM_CHILD_TEST_OVER", "parent", 1);
  ChildOptions options;
  options.environment = {"GRADNORM_CHILD_TEST_OVER=child",
                         "GRADNORM_CHILD_TEST_NEW=new"};
  absl::StatusOr<CommandOutput> out =
      RunCommand({"/bin/sh", "-c",
                  "echo $GRADNORM_CHILD_TEST_KEPT $GRADNORM_CHILD_TEST_OVER "
                  "$GRADNORM_CHILD_TEST_NEW"},
                 options, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->exit_code, 0);
  EXPECT_EQ(out->output, "kept child new\n");
}

TEST(ChildProcessTest, RunsInTheWorkingDirectoryItIsGiven) {
  ChildOptions options;
  options.working_directory = "/usr";
  absl::StatusOr<CommandOutput> out =
      RunCommand({"/bin/pwd"}, options, absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->output, "/usr\n");
}

TEST(ChildProcessTest, RunCommandReturnsTheExitCodeAndBothStreams) {
  absl::StatusOr<CommandOutput> out =
      RunCommand({"/bin/sh", "-c", "echo one; echo two >&2; exit 4"}, {},
                 absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->exit_code, 4);
  EXPECT_EQ(out->output, "one\ntwo\n");
}

TEST(ChildProcessTest, StopAtSignalsAChildStillRunningAndWaitsForIt) {
  const std::string log = TempPath("stop.log");
  auto child =
      ChildProcess::Start({"/bin/sh", "-c",
                           "trap 'echo stopped; exit 0' TERM; echo started; "
                           "while true; do sleep 0.05; done"},
                          log);
  ASSERT_TRUE(child.ok()) << child.status();
  absl::StatusOr<int> code =
      (*child)->StopAt(absl::Now() + absl::Milliseconds(500), SIGTERM);
  EXPECT_EQ(code.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(code.status().message().find("exited with 0"), std::string::npos)
      << code.status();
  EXPECT_EQ(ReadWholeFile(log), "started\nstopped\n");
  EXPECT_FALSE((*child)->Running());

  auto quick =
      ChildProcess::Start({"/bin/sh", "-c", "exit 5"}, TempPath("quick.log"));
  ASSERT_TRUE(quick.ok());
  absl::StatusOr<int> quick_code =
      (*quick)->StopAt(absl::Now() + absl::Seconds(10), SIGTERM);
  ASSERT_TRUE(quick_code.ok()) << quick_code.status();
  EXPECT_EQ(*quick_code, 5);
}

}  // namespace
}  // namespace gradnorm
