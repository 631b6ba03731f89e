// gradnormctl against a real coordinator process: tables, --json, health,
// errors. (The CLI lives in client/; this test needs the server binary too.)
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/coordinator_test_util.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

struct Output {
  int exit_code;
  std::string text;  // stdout and stderr
};

class GradnormctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string port_file = TempPath("port");
    std::remove(port_file.c_str());
    pid_ = fork();
    if (pid_ == 0) {
      execl("server/coordinator", "server/coordinator", "--listen=127.0.0.1:0",
            "--store=memory", ("--port_file=" + port_file).c_str(),
            static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {
      std::ifstream in(port_file);
      if (in >> port_) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_GT(port_, 0) << "the coordinator did not write --port_file";
    target_ = absl::StrCat("127.0.0.1:", port_);
  }

  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status = 0;
      waitpid(pid_, &status, 0);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
  }

  Output Ctl(const std::string& args) {
    const std::string command =
        absl::StrCat("client/gradnormctl --target=", target_, " ", args, " 2>&1");
    FILE* pipe = popen(command.c_str(), "r");
    Output out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.text.append(buffer, n);
    const int status = pclose(pipe);
    out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return out;
  }

  pid_t pid_ = -1;
  int port_ = 0;
  std::string target_;
};

TEST_F(GradnormctlTest, TablesJsonHealthAndErrors) {
  TestClient client(NewChannel(target_));
  v1::RunConfig config;
  config.set_norm_type(2);
  config.set_max_norm(4);
  config.set_participants(1);
  ASSERT_TRUE(client.RegisterRun("ctl-run", config).ok());
  // Norms 3, 5 (clipped), 4.
  for (int step = 0; step < 3; ++step) {
    const double partial[] = {9.0, 25.0, 16.0};
    ASSERT_TRUE(client.Report("ctl-run", step, 0, partial[step]).ok());
  }

  Output runs = Ctl("runs");
  EXPECT_EQ(runs.exit_code, 0) << runs.text;
  EXPECT_THAT(runs.text, MatchesRegex(
                             "RUN +P +MAX_NORM +PARTICIPANTS +POLICY +ROUNDS +LAST_STEP +OPEN +CREATED\n"
                             "ctl-run +2 +4 +1 +static +3 +2 +0 +[0-9T:Z-]+\n"));

  Output json = Ctl("--json runs");
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.text, HasSubstr("\"run_id\": \"ctl-run\""));

  Output history = Ctl("history ctl-run");
  EXPECT_EQ(history.exit_code, 0);
  EXPECT_THAT(history.text,
              HasSubstr("FIRST_STEP  LAST_STEP  ROUNDS  MIN  MEAN  MAX  LAST  CLIPPED  SKIPPED"));
  EXPECT_THAT(history.text, MatchesRegex("(.|\n)*\n +1 +1 +1 +5 +5 +5 +5 +1 +0 +0\n(.|\n)*"));

  Output summary = Ctl("summary ctl-run");
  EXPECT_EQ(summary.exit_code, 0);
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*rounds +3\n(.|\n)*"));
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*max_norm +5\n(.|\n)*"));

  Output health = Ctl("health");
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_EQ(health.text, "SERVING\n");

  Output missing = Ctl("run nobody");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.text, HasSubstr("GetRun failed: NOT_FOUND"));
  EXPECT_THAT(missing.text, HasSubstr("nobody"));

  Output usage = Ctl("history");
  EXPECT_EQ(usage.exit_code, 2);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
