// gradnormctl against a real coordinator process: tables, --json, watch,
// health, --timeout, usage errors.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/child_process.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::PendingReport;
using ::gradnorm::server::testing::ServeOnLoopback;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::Not;

// p = 2, max_norm 4, `participants` jobs.
v1::RunConfig Config(uint32_t participants) {
  v1::RunConfig config;
  config.set_norm_type(2);
  config.set_max_norm(4);
  config.set_participants(participants);
  config.set_inexact(true);  // doubles are reported
  return config;
}

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return absl::StrCat(dir != nullptr ? dir : "/tmp", "/", name);
}

struct Output {
  int exit_code;
  std::string text;  // stdout and stderr
};

constexpr char kCtl[] = "tools/gradnormctl/gradnormctl";
constexpr char kCoordinator[] = "server/coordinator";

// A command's output, its exit code 124 when it had to be stopped (as
// coreutils' timeout reports it).
Output Stopped(ChildProcess& child, absl::Time deadline) {
  absl::StatusOr<int> code = child.StopAt(deadline, SIGTERM);
  return {code.ok() ? *code : 124, ReadWholeFile(child.output_path())};
}

// Runs argv to completion (60 s at most) with `environment` set.
Output RunToEnd(const std::vector<std::string>& argv,
                std::vector<std::string> environment = {}) {
  ChildOptions options;
  options.environment = std::move(environment);
  absl::StatusOr<CommandOutput> out =
      RunCommand(argv, options, absl::Now() + absl::Seconds(60));
  if (!out.ok()) return {-1, out.status().ToString()};
  return {out->exit_code, out->output};
}

// Runs argv for `duration` and then stops it with SIGTERM (as coreutils'
// `timeout -s TERM`).
Output RunFor(const std::vector<std::string>& argv, absl::Duration duration) {
  static int runs = 0;
  ChildOptions options;
  options.output_path = TempPath(absl::StrCat("run_for.", runs++, ".out"));
  absl::StatusOr<std::unique_ptr<ChildProcess>> child =
      ChildProcess::Start(argv, options);
  if (!child.ok()) return {-1, child.status().ToString()};
  return Stopped(**child, absl::Now() + duration);
}

// A gradnormctl started in the background, stopped at a deadline.
struct Background {
  std::unique_ptr<ChildProcess> child;
  absl::Time deadline;
};

class GradnormctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string port_file = TempPath("port");
    std::remove(port_file.c_str());
    absl::StatusOr<std::unique_ptr<ChildProcess>> started =
        ChildProcess::Start({kCoordinator, "--listen=127.0.0.1:0",
                             "--store=memory", "--port_file=" + port_file},
                            ChildOptions());
    ASSERT_TRUE(started.ok()) << started.status();
    coordinator_ = *std::move(started);
    for (int i = 0; i < 500; ++i) {
      std::ifstream in(port_file);
      if (in >> port_) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ASSERT_GT(port_, 0) << "the coordinator did not write --port_file";
    target_ = absl::StrCat("127.0.0.1:", port_);
  }

  void TearDown() override {
    if (coordinator_ == nullptr) return;
    coordinator_->Signal(SIGTERM);
    absl::StatusOr<int> code =
        coordinator_->Wait(absl::Now() + absl::Seconds(60));
    EXPECT_TRUE(code.ok() && *code == 0) << code.status();
  }

  // gradnormctl's argv: --target=`target` (default: the coordinator), then
  // `args` split at spaces.
  std::vector<std::string> CtlArgv(const std::string& args,
                                   const std::string& target = "") {
    std::vector<std::string> argv = {
        kCtl, "--target=" + (target.empty() ? target_ : target)};
    for (absl::string_view arg : absl::StrSplit(args, ' ', absl::SkipEmpty())) {
      argv.emplace_back(arg);
    }
    return argv;
  }

  // Runs gradnormctl against the coordinator and waits for it to exit.
  Output Ctl(const std::string& args) { return RunToEnd(CtlArgv(args)); }

  // Starts gradnormctl with `args`, to be stopped `stop_after` from now.
  Background Start(const std::string& args, absl::Duration stop_after,
                   const std::string& target = "") {
    ChildOptions options;
    options.output_path = TempPath(absl::StrCat("ctl.", started_++, ".out"));
    absl::StatusOr<std::unique_ptr<ChildProcess>> child =
        ChildProcess::Start(CtlArgv(args, target), options);
    EXPECT_TRUE(child.ok()) << child.status();
    return {child.ok() ? *std::move(child) : nullptr, absl::Now() + stop_after};
  }

  Output Finish(Background background) {
    if (background.child == nullptr) return {-1, "not started"};
    return Stopped(*background.child, background.deadline);
  }

  std::unique_ptr<ChildProcess> coordinator_;
  int port_ = 0;
  int started_ = 0;
  std::string target_;
};

TEST_F(GradnormctlTest, TablesJsonHealthAndErrors) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("ctl-run", Config(1)).ok());
  // Norms 3, 5 (clipped), 4.
  for (int step = 0; step < 3; ++step) {
    const double partial[] = {9.0, 25.0, 16.0};
    ASSERT_TRUE(client.Report("ctl-run", step, 0, partial[step]).ok());
  }

  Output runs = Ctl("runs");
  EXPECT_EQ(runs.exit_code, 0) << runs.text;
  EXPECT_THAT(
      runs.text,
      MatchesRegex("RUN +P +MAX_NORM +PARTICIPANTS +POLICY +ROUNDS +LAST_STEP "
                   "+OPEN +STATE "
                   "+CREATED\n"
                   "ctl-run +2 +4 +1 +static +3 +2 +0 +running +[0-9T:Z-]+\n"));

  Output json = Ctl("--json runs");
  EXPECT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.text, HasSubstr("\"run_id\": \"ctl-run\""));

  Output history = Ctl("history ctl-run");
  EXPECT_EQ(history.exit_code, 0);
  EXPECT_THAT(history.text, HasSubstr("FIRST_STEP  LAST_STEP  ROUNDS  MIN  "
                                      "MEAN  MAX  LAST  CLIPPED  SKIPPED"));
  EXPECT_THAT(history.text,
              MatchesRegex("(.|\n)*\n +1 +1 +1 +5 +5 +5 +5 +1 +0 +0\n(.|\n)*"));

  Output summary = Ctl("summary ctl-run");
  EXPECT_EQ(summary.exit_code, 0);
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*rounds +3\n(.|\n)*"));
  // Rows name what they hold: the largest total norm seen (5), not the
  // run's max_norm threshold (4, in `run`).
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*max_total_norm +5\n(.|\n)*"));
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*p50_total_norm +4\n(.|\n)*"));
  EXPECT_THAT(summary.text, Not(HasSubstr("max_norm ")));
  Output run = Ctl("run ctl-run");
  EXPECT_THAT(run.text, MatchesRegex("(.|\n)*max_norm +4\n(.|\n)*"));

  Output health = Ctl("health");
  EXPECT_EQ(health.exit_code, 0);
  EXPECT_EQ(health.text, "SERVING\n");

  Output missing = Ctl("run nobody");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.text, HasSubstr("GetRun failed: NOT_FOUND"));
  EXPECT_THAT(missing.text, HasSubstr("nobody"));

  Output usage = Ctl("history");
  EXPECT_EQ(usage.exit_code, 2);

  Output no_timeout = Ctl("--timeout=0 runs");
  EXPECT_EQ(no_timeout.exit_code, 2);
  EXPECT_THAT(no_timeout.text, HasSubstr("--timeout=0: expected a positive"));
}

// A coordinator that answers UNAVAILABLE to its first `unavailable` calls,
// as a replica does while the coordinator holding the database changes, and
// then answers.
class UnavailableAtFirst final : public v1::Coordinator::Service {
 public:
  explicit UnavailableAtFirst(int unavailable) : unavailable_(unavailable) {}

  grpc::Status GetSummary(grpc::ServerContext*, const v1::GetSummaryRequest*,
                          v1::GetSummaryResponse* response) override {
    if (Unavailable()) return Holderless();
    response->set_rounds(7);
    return grpc::Status::OK;
  }
  grpc::Status DeleteRun(grpc::ServerContext*, const v1::DeleteRunRequest*,
                         v1::DeleteRunResponse* response) override {
    if (Unavailable()) return Holderless();
    response->set_rounds(7);
    return grpc::Status::OK;
  }

  int calls() const { return calls_.load(); }

 private:
  bool Unavailable() { return calls_.fetch_add(1) < unavailable_; }
  static grpc::Status Holderless() {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "no coordinator holds the database yet");
  }

  const int unavailable_;
  std::atomic<int> calls_{0};
};

// A coordinator that answers UNAVAILABLE is asked again until it answers
// (within --timeout); delete is not repeated; a target where nothing listens
// fails at once, not at --timeout.
TEST_F(GradnormctlTest, UnavailableFromAReachableCoordinatorIsRetried) {
  UnavailableAtFirst service(3);
  std::string target;
  std::unique_ptr<grpc::Server> server = ServeOnLoopback(&service, &target);
  Output summary = RunToEnd(CtlArgv("summary some-run", target));
  EXPECT_EQ(summary.exit_code, 0) << summary.text;
  EXPECT_THAT(summary.text, MatchesRegex("(.|\n)*rounds +7\n(.|\n)*"));
  EXPECT_EQ(service.calls(), 4);

  UnavailableAtFirst deleting(1);
  std::unique_ptr<grpc::Server> other = ServeOnLoopback(&deleting, &target);
  Output deleted = RunToEnd(CtlArgv("delete some-run", target));
  EXPECT_EQ(deleted.exit_code, 1) << deleted.text;
  EXPECT_THAT(deleted.text,
              HasSubstr("DeleteRun failed: UNAVAILABLE: no coordinator holds "
                        "the database yet"));
  EXPECT_EQ(deleting.calls(), 1);

  UnavailableAtFirst never(1000000);
  std::unique_ptr<grpc::Server> stuck = ServeOnLoopback(&never, &target);
  Output gave_up = RunToEnd(CtlArgv("--timeout=1 summary some-run", target));
  EXPECT_EQ(gave_up.exit_code, 1) << gave_up.text;
  EXPECT_THAT(gave_up.text,
              HasSubstr("GetSummary failed: UNAVAILABLE: no coordinator holds "
                        "the database yet"));
  EXPECT_GT(never.calls(), 1);

  // Far longer than RunToEnd waits (60 s): retrying here would not end.
  const std::string none = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  Output unreachable =
      RunToEnd(CtlArgv("--timeout=600 summary some-run", none));
  EXPECT_EQ(unreachable.exit_code, 1) << unreachable.text;
  EXPECT_THAT(unreachable.text, HasSubstr("GetSummary failed: UNAVAILABLE"));
}

// A target listing several coordinators (here a port where none listens and
// the coordinator, in both orders): each command reaches the one serving.
TEST_F(GradnormctlTest, TargetListingSeveralCoordinatorsReachesTheOneServing) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("listed-run", Config(1)).ok());
  ASSERT_TRUE(client.Report("listed-run", 0, 0, 9.0).ok());
  const std::string none = absl::StrCat("127.0.0.1:", FreeLoopbackPort());
  for (const std::string& target :
       {absl::StrCat("ipv4:", none, ",", target_),
        absl::StrCat("ipv4:", target_, ",", none)}) {
    Output runs = RunToEnd(CtlArgv("runs", target));
    EXPECT_EQ(runs.exit_code, 0) << target << ": " << runs.text;
    EXPECT_THAT(runs.text, HasSubstr("listed-run")) << target;
    Output health = RunToEnd(CtlArgv("health", target));
    EXPECT_EQ(health.exit_code, 0) << target << ": " << health.text;
    EXPECT_THAT(health.text, HasSubstr("SERVING")) << target;
  }
}

// plot draws the history at the width asked for, with the clipped step and
// the spike marked, and its usage errors exit 2.
TEST_F(GradnormctlTest, PlotDrawsTheHistory) {
  TestClient client(NewChannel(target_));
  v1::RunConfig config = Config(1);
  config.mutable_spike_rule()->set_enabled(true);
  config.mutable_spike_rule()->set_sigma(3);
  config.mutable_spike_rule()->set_window(4);
  config.mutable_spike_rule()->set_warmup_steps(4);
  ASSERT_TRUE(client.RegisterRun("plot-run", config).ok());
  // Norms 1, 3, 2, 4 (the window: mean 2.5, std 1.1), 1000 (a spike:
  // skipped), 5 (within 3 sigma of the window, clipped at 4).
  const double norms[] = {1.0, 3.0, 2.0, 4.0, 1000.0, 5.0};
  for (int step = 0; step < 6; ++step) {
    ASSERT_TRUE(
        client.Report("plot-run", step, 0, norms[step] * norms[step]).ok());
  }
  Output plot = Ctl("plot plot-run --width=30 --height=8");
  EXPECT_EQ(plot.exit_code, 0) << plot.text;
  EXPECT_THAT(plot.text, ::testing::StartsWith("run plot-run: 6 rounds\n"));
  // Step 3 (a total of exactly max_norm) and step 5 clipped, step 4 skipped.
  EXPECT_THAT(plot.text, HasSubstr("\n          "
                                   "   CSC\n"))
      << plot.text;
  EXPECT_THAT(plot.text, HasSubstr("step 0")) << plot.text;
  EXPECT_EQ(Ctl("plot").exit_code, 2);
  EXPECT_EQ(Ctl("plot nobody --width=30").exit_code, 1);
  // --watch redraws (from the top of a cleared screen) until stopped, and
  // shows rounds that arrive meanwhile.
  Background watch =
      Start("plot plot-run --width=30 --height=8 --watch", absl::Seconds(3));
  absl::SleepFor(absl::Milliseconds(1200));
  ASSERT_TRUE(client.Report("plot-run", 6, 0, 4.0).ok());
  Output watched = Finish(std::move(watch));
  EXPECT_EQ(watched.exit_code, 124) << watched.text;
  EXPECT_THAT(watched.text, HasSubstr("\x1b[H\x1b[2Jrun plot-run: 6 rounds"));
  EXPECT_THAT(watched.text, HasSubstr("\x1b[H\x1b[2Jrun plot-run: 7 rounds"));
}

// parity compares two runs' totals bitwise: yes for the same reports, and the
// first differing step otherwise, with exit codes 0 and 1.
TEST_F(GradnormctlTest, ParityNamesTheFirstDifferingStep) {
  TestClient client(NewChannel(target_));
  for (const char* run : {"layout-a", "layout-b", "layout-c"}) {
    ASSERT_TRUE(client.RegisterRun(run, Config(1)).ok());
  }
  for (int step = 0; step < 5; ++step) {
    const double partial = 0.25 * (step + 1);
    ASSERT_TRUE(client.Report("layout-a", step, 0, partial).ok());
    ASSERT_TRUE(client.Report("layout-b", step, 0, partial).ok());
    // Run c: step 3's partial off in its 12th digit.
    ASSERT_TRUE(client
                    .Report("layout-c", step, 0,
                            step == 3 ? partial * (1 + 1e-12) : partial)
                    .ok());
  }
  Output same = Ctl("parity layout-a layout-b");
  EXPECT_EQ(same.exit_code, 0) << same.text;
  EXPECT_THAT(same.text,
              HasSubstr("runs layout-a and layout-b: 5 common steps, bitwise "
                        "equal"));
  // Reported as doubles only: the note says the totals are not exact.
  EXPECT_THAT(same.text, HasSubstr("note: run layout-a has totals that are "
                                   "not exact"));
  Output different = Ctl("parity layout-a layout-c");
  EXPECT_EQ(different.exit_code, 1) << different.text;
  EXPECT_THAT(different.text, HasSubstr("first differs at step 3: 1 vs"));
  EXPECT_THAT(different.text, HasSubstr("; 1 step differs"));
  Output json = Ctl("--json parity layout-a layout-c");
  EXPECT_THAT(json.text, HasSubstr("\"equal\":false,\"compared\":5"));
  EXPECT_EQ(Ctl("parity layout-a").exit_code, 2);
  EXPECT_EQ(Ctl("parity layout-a nobody").exit_code, 1);
}

// export-tensorboard writes one event per finalized round into a new file.
TEST_F(GradnormctlTest, ExportTensorBoardWritesEveryRound) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("tb-run", Config(1)).ok());
  for (int step = 0; step < 3; ++step) {
    ASSERT_TRUE(client.Report("tb-run", step, 0, 4.0 * (step + 1)).ok());
  }
  const std::string dir = TempPath("tensorboard");
  Output out = Ctl("export-tensorboard tb-run " + dir);
  EXPECT_EQ(out.exit_code, 0) << out.text;
  EXPECT_THAT(out.text, HasSubstr("wrote 3 steps of run tb-run to " + dir +
                                  "/events.out.tfevents."));
  const std::string path = out.text.substr(
      out.text.find(dir), out.text.size() - out.text.find(dir) - 1);
  const std::string bytes = ReadWholeFile(path);
  size_t events = 0;
  for (size_t at = bytes.find("grad_norm/total"); at != std::string::npos;
       at = bytes.find("grad_norm/total", at + 1)) {
    ++events;
  }
  EXPECT_EQ(events, 3u);
  EXPECT_EQ(Ctl("export-tensorboard tb-run").exit_code, 2);
  EXPECT_EQ(Ctl("export-tensorboard nobody " + dir).exit_code, 1);
}

// --help and --version exit 0, usage errors (unknown flag, bad value) exit
// 2, and GRADNORM_TARGET / GRADNORM_TOKEN_FILE stand for the flags.
TEST_F(GradnormctlTest, HelpVersionUsageErrorsAndEnvironment) {
  Output help = RunToEnd({kCtl, "--help"});
  EXPECT_EQ(help.exit_code, 0) << help.text;
  EXPECT_THAT(help.text, HasSubstr("--participants ("));
  EXPECT_THAT(help.text, HasSubstr("GRADNORM_TARGET"));
  Output version = RunToEnd({kCtl, "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.text, "gradnormctl " GRADNORM_VERSION "\n");
  Output server = RunToEnd({kCoordinator, "--version"});
  EXPECT_EQ(server.exit_code, 0);
  EXPECT_EQ(server.text, "gradnorm coordinator " GRADNORM_VERSION "\n");

  Output unknown = Ctl("--bogus runs");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_THAT(unknown.text, HasSubstr("unknown flag --bogus"));
  Output bad_value = Ctl("--top=abc summary r");
  EXPECT_EQ(bad_value.exit_code, 2);
  EXPECT_THAT(bad_value.text, HasSubstr("--top=abc"));

  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("env-run", Config(1)).ok());
  Output env = RunToEnd({kCtl, "runs"}, {"GRADNORM_TARGET=" + target_});
  EXPECT_EQ(env.exit_code, 0) << env.text;
  EXPECT_THAT(env.text, HasSubstr("env-run"));
  // The flag wins over the environment.
  Output flag_wins = RunToEnd(CtlArgv("runs"), {"GRADNORM_TARGET=127.0.0.1:1"});
  EXPECT_EQ(flag_wins.exit_code, 0) << flag_wins.text;
  // GRADNORM_TOKEN_FILE is read like --token_file: a missing file is a
  // usage error naming it.
  Output token =
      RunToEnd(CtlArgv("runs"), {"GRADNORM_TOKEN_FILE=/nonexistent/token"});
  EXPECT_EQ(token.exit_code, 2);
  EXPECT_THAT(token.text, HasSubstr("/nonexistent/token"));
}

// A clean start and shutdown, also with the health-only port, logs no
// error-level line (gRPC's "E<date> ..." format).
TEST_F(GradnormctlTest, CleanStartWithHealthPortLogsNoError) {
  Output run = RunFor({kCoordinator, "--listen=127.0.0.1:0", "--store=memory",
                       "--health_listen=127.0.0.1:0"},
                      absl::Seconds(2));
  EXPECT_THAT(run.text, HasSubstr("listening on"));
  EXPECT_THAT(run.text, HasSubstr("shut down cleanly"));
  EXPECT_THAT(run.text, Not(MatchesRegex("(.|\n)*E[0-9]{4} [0-9]{2}:(.|\n)*")))
      << run.text;
  // The operational log: one line at start and one at shutdown.
  EXPECT_THAT(
      run.text,
      MatchesRegex("(.|\n)*level=info event=start version=" GRADNORM_VERSION
                   " listen=127.0.0.1:[0-9]+ store=memory db=\"\" "
                   "runs=0\n(.|\n)*"));
  EXPECT_THAT(run.text,
              MatchesRegex("(.|\n)*level=info event=shutdown signal=15 "
                           "status=clean\n(.|\n)*"));
  Output quiet = RunFor({kCoordinator, "--listen=127.0.0.1:0", "--store=memory",
                         "--log_level=error"},
                        absl::Seconds(1));
  EXPECT_THAT(quiet.text, Not(HasSubstr("event=")));
  Output bad = RunToEnd({kCoordinator, "--listen=127.0.0.1:0", "--store=memory",
                         "--log_level=debug"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.text, HasSubstr("log level 'debug' is unknown"));
}

// register takes every policy's settings; the stored config shows them, the
// same settings again are a no-op, others FAILED_PRECONDITION, and settings
// it does not understand are usage errors.
TEST_F(GradnormctlTest, RegisterTakesEveryPolicySetting) {
  Output zclip = Ctl(
      "--json register zrun --participants=3 --norm_type=inf --max_norm=2.5 "
      "--policy=zclip --zclip_alpha=0.9 --zclip_z=3 --warmup_steps=7 "
      "--spike_sigma=5 --spike_window=64 --spike_warmup=8 --nonfinite=error "
      "--round_timeout_ms=1500");
  EXPECT_EQ(zclip.exit_code, 0) << zclip.text;
  EXPECT_THAT(zclip.text, HasSubstr("\"created\": true"));
  TestClient client(NewChannel(target_));
  v1::RunInfo run;
  ASSERT_TRUE(client.GetRun("zrun", &run).ok());
  const v1::RunConfig& config = run.config();
  EXPECT_EQ(config.participants(), 3u);
  EXPECT_TRUE(std::isinf(config.norm_type()));
  EXPECT_EQ(config.max_norm(), 2.5);
  EXPECT_EQ(config.clip_policy().zclip().alpha(), 0.9);
  EXPECT_EQ(config.clip_policy().zclip().z_threshold(), 3.0);
  EXPECT_EQ(config.clip_policy().zclip().warmup_steps(), 7u);
  EXPECT_TRUE(config.spike_rule().enabled());
  EXPECT_EQ(config.spike_rule().sigma(), 5.0);
  EXPECT_EQ(config.spike_rule().window(), 64u);
  EXPECT_EQ(config.spike_rule().warmup_steps(), 8u);
  EXPECT_EQ(config.nonfinite_policy(), v1::NON_FINITE_POLICY_ERROR);
  EXPECT_EQ(config.round_timeout_ms(), 1500u);

  Output autoclip =
      Ctl("register arun --participants=1 --max_norm=1 --policy=autoclip "
          "--autoclip_percentile=25 --autoclip_history=50 --warmup_steps=4");
  EXPECT_EQ(autoclip.exit_code, 0) << autoclip.text;
  EXPECT_THAT(autoclip.text, HasSubstr("registered run arun"));
  EXPECT_THAT(autoclip.text,
              MatchesRegex("(.|\n)*clip_policy +autoclip(.|\n)*"));
  ASSERT_TRUE(client.GetRun("arun", &run).ok());
  EXPECT_EQ(run.config().clip_policy().auto_clip().percentile(), 25.0);
  EXPECT_EQ(run.config().clip_policy().auto_clip().history_length(), 50u);
  EXPECT_FALSE(run.config().inexact());
  EXPECT_THAT(autoclip.text,
              MatchesRegex("(.|\n)*partials +exact only(.|\n)*"));

  Output inexact = Ctl("register irun --participants=2 --inexact");
  EXPECT_EQ(inexact.exit_code, 0) << inexact.text;
  EXPECT_THAT(inexact.text,
              MatchesRegex("(.|\n)*partials +exact or double(.|\n)*"));
  ASSERT_TRUE(client.GetRun("irun", &run).ok());
  EXPECT_TRUE(run.config().inexact());

  Output again =
      Ctl("register arun --participants=1 --max_norm=1 --policy=autoclip "
          "--autoclip_percentile=25 --autoclip_history=50 --warmup_steps=4");
  EXPECT_EQ(again.exit_code, 0) << again.text;
  EXPECT_THAT(again.text, HasSubstr("run already registered: arun"));
  Output other = Ctl("register arun --participants=2");
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_THAT(other.text, HasSubstr("RegisterRun failed: FAILED_PRECONDITION"));

  Output bad_value =
      Ctl("register brun --participants=1 --policy=zclip --zclip_alpha=2");
  EXPECT_EQ(bad_value.exit_code, 1);
  EXPECT_THAT(bad_value.text, HasSubstr("INVALID_ARGUMENT"));
  EXPECT_EQ(Ctl("register brun").exit_code, 2);
  Output policy = Ctl("register brun --participants=1 --policy=adaptive");
  EXPECT_EQ(policy.exit_code, 2);
  EXPECT_THAT(
      policy.text,
      HasSubstr("--policy=adaptive: expected static, autoclip or zclip"));
  EXPECT_EQ(Ctl("register brun --participants=1 --nonfinite=ignore").exit_code,
            2);
  EXPECT_EQ(Ctl("register brun --participants=1 --norm_type=two").exit_code, 2);
}

// --top=N lists N participants; 0 would be the server's default of 5, not
// "none", so it is a usage error.
TEST_F(GradnormctlTest, SummaryTopListsThatManyParticipantsAndRejectsZero) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("two-jobs", Config(2)).ok());
  std::unique_ptr<PendingReport> first =
      client.StartReport("two-jobs", 0, 0, 1.0);
  ASSERT_TRUE(client.Report("two-jobs", 0, 1, 3.0).ok());
  ASSERT_TRUE(first->WaitFor(absl::Seconds(20)));
  ASSERT_TRUE(first->status.ok()) << first->status.error_message();

  const std::string header =
      "(.|\n)*\nPARTICIPANT +TIMES_SLOWEST +MEAN_LAG_S +MAX_LAG_S\n";
  const std::string row = " +[01] +[01] +[0-9.e-]+ +[0-9.e-]+\n";
  Output one = Ctl("summary two-jobs --top=1");
  EXPECT_EQ(one.exit_code, 0) << one.text;
  EXPECT_THAT(one.text, MatchesRegex(header + row));
  Output two = Ctl("summary two-jobs --top=2");
  EXPECT_EQ(two.exit_code, 0) << two.text;
  EXPECT_THAT(two.text, MatchesRegex(header + row + row));

  Output zero = Ctl("summary two-jobs --top=0");
  EXPECT_EQ(zero.exit_code, 2);
  EXPECT_EQ(zero.text,
            "gradnormctl: --top=0: expected at least 1 (how many slowest "
            "participants the "
            "summary lists)\n");
}

// watch --json prints one object per round per line, with the proto field
// names every other --json command uses.
TEST_F(GradnormctlTest, WatchJsonUsesProtoFieldNames) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("ctl-run", Config(1)).ok());
  ASSERT_TRUE(client.Report("ctl-run", 0, 0, 9.0).ok());
  ASSERT_TRUE(client.Report("ctl-run", 1, 0, 25.0).ok());

  // watch runs until interrupted: coreutils' timeout ends it (exit 124) after
  // the replay of the stored rounds.
  Output watch = Finish(Start("--json watch ctl-run", absl::Seconds(2)));
  EXPECT_EQ(watch.exit_code, 124) << watch.text;
  EXPECT_THAT(
      watch.text,
      MatchesRegex("\\{\"run_id\":\"ctl-run\",\"total_norm\":3,[^\n]*\\}\n"
                   "\\{\"run_id\":\"ctl-run\",\"step\":\"1\","
                   "\"total_norm\":5,[^\n]*\"action\":\"ACTION_CLIP\""
                   "[^\n]*\"effective_max_norm\":4,[^\n]*\\}\n"));
  EXPECT_THAT(watch.text, Not(HasSubstr("totalNorm")));
  EXPECT_THAT(watch.text, Not(HasSubstr("runId")));
}

// finish ends a run (and a watch of it, which exits 0), delete removes it.
TEST_F(GradnormctlTest, FinishEndsWatchesAndDeleteRemovesTheRun) {
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("done-run", Config(2)).ok());
  ASSERT_TRUE(client.RegisterRun("kept-run", Config(1)).ok());
  std::thread both(
      [&] { EXPECT_TRUE(client.Report("done-run", 0, 0, 9.0).ok()); });
  TestClient other(NewChannel(target_));
  ASSERT_TRUE(other.Report("done-run", 0, 1, 16.0).ok());
  both.join();
  Background watch = Start("watch done-run", absl::Seconds(20));
  absl::SleepFor(absl::Milliseconds(500));
  auto lonely = other.StartReport("done-run", 1, 0, 1.0);

  Output finish = Ctl("finish done-run");
  EXPECT_EQ(finish.exit_code, 0) << finish.text;
  EXPECT_THAT(
      finish.text,
      HasSubstr("finished run done-run (1 rounds waiting for participants "
                "were abandoned)"));
  EXPECT_THAT(finish.text, MatchesRegex("(.|\n)*state +finished\n(.|\n)*"));
  ASSERT_TRUE(lonely->WaitFor(absl::Seconds(10)));
  EXPECT_EQ(lonely->status.error_code(), grpc::StatusCode::ABORTED);

  Output watched = Finish(std::move(watch));
  EXPECT_EQ(watched.exit_code, 0) << watched.text;
  EXPECT_THAT(watched.text, MatchesRegex("(.|\n)* +0 +5 +(.|\n)*"));
  EXPECT_THAT(watched.text, HasSubstr("gradnormctl: run done-run is finished"));
  Output runs = Ctl("runs");
  EXPECT_THAT(
      runs.text,
      MatchesRegex("(.|\n)*STATE(.|\n)*done-run +2 +4 +2 +static +1 +0 +0 "
                   "+finished(.|\n)*kept-run(.|\n)* running(.|\n)*"));

  Output deleted = Ctl("delete done-run");
  EXPECT_EQ(deleted.exit_code, 0) << deleted.text;
  EXPECT_EQ(deleted.text, "deleted run done-run and its 1 rounds\n");
  Output gone = Ctl("run done-run");
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_THAT(gone.text, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(Ctl("delete").exit_code, 2);
  EXPECT_EQ(Ctl("finish a b").exit_code, 2);
}

// A request with a string that is not UTF-8 is refused, and the coordinator
// logs it as one warning of its own log instead of libprotobuf's ERROR lines.
TEST_F(GradnormctlTest, NonUtf8RequestsAreAWarningNotAnError) {
  const std::string log_file = TempPath("utf8.log");
  const std::string port_file = TempPath("utf8.port");
  std::remove(port_file.c_str());
  ChildOptions options;
  options.output_path = log_file;
  absl::StatusOr<std::unique_ptr<ChildProcess>> coordinator =
      ChildProcess::Start({kCoordinator, "--listen=127.0.0.1:0",
                           "--store=memory", "--port_file=" + port_file},
                          options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  const absl::Time stop_at = absl::Now() + absl::Seconds(3);
  int port = 0;
  for (int i = 0; i < 500 && port == 0; ++i) {
    std::ifstream(port_file) >> port;
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(port, 0);
  for (int i = 0; i < 3; ++i) {
    testing::RawCallResult result =
        testing::RawCall(NewChannel(absl::StrCat("127.0.0.1:", port)),
                         "/gradnorm.v1.Coordinator/GetRun",
                         {std::string("\x0a\x02\xff\xfe", 4)});
    EXPECT_EQ(result.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  const Output stopped = Stopped(**coordinator, stop_at);
  EXPECT_EQ(stopped.exit_code, 124);
  const std::string& text = stopped.text;
  EXPECT_THAT(text, Not(HasSubstr("libprotobuf ERROR")));
  EXPECT_THAT(text, MatchesRegex("(.|\n)*level=warning event=protobuf_message "
                                 "message=\".*invalid UTF-8(.|\n)*"));
}

// watch started before its run exists waits for it, saying so, and then
// streams its rounds.
TEST_F(GradnormctlTest, WatchWaitsForARunNotYetRegistered) {
  Background watch = Start("--json watch later-run", absl::Seconds(4));
  absl::SleepFor(absl::Milliseconds(700));
  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("later-run", Config(1)).ok());
  ASSERT_TRUE(client.Report("later-run", 0, 0, 9.0).ok());
  Output out = Finish(std::move(watch));
  EXPECT_EQ(out.exit_code, 124) << out.text;
  EXPECT_THAT(out.text,
              HasSubstr("run later-run is not registered yet; waiting for it"));
  EXPECT_THAT(out.text,
              HasSubstr("{\"run_id\":\"later-run\",\"total_norm\":3,"));
}

// --timeout bounds watch's connection, not the stream: a server that accepts
// TCP but never answers fails within it (gRPC alone would wait its 20 s
// connect timeout), and a connected watch keeps streaming past it.
TEST_F(GradnormctlTest, WatchTimeoutBoundsConnectingOnly) {
  const int silent = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(silent, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  ASSERT_EQ(
      bind(silent, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ASSERT_EQ(listen(silent, 4), 0);
  ASSERT_EQ(getsockname(silent, reinterpret_cast<sockaddr*>(&address), &length),
            0);
  const std::string silent_target =
      absl::StrCat("127.0.0.1:", ntohs(address.sin_port));
  const absl::Time start = absl::Now();
  Output hung = Finish(
      Start("--timeout=0.5 watch ctl-run", absl::Seconds(60), silent_target));
  const absl::Duration elapsed = absl::Now() - start;
  close(silent);
  EXPECT_EQ(hung.exit_code, 1) << hung.text;
  EXPECT_THAT(
      hung.text,
      HasSubstr("WatchRun failed: DEADLINE_EXCEEDED: no connection to " +
                silent_target + " within --timeout 0.5 s"));
  EXPECT_LT(elapsed, absl::Seconds(5));

  TestClient client(NewChannel(target_));
  ASSERT_TRUE(client.RegisterRun("ctl-run", Config(1)).ok());
  Background watch = Start("--timeout=0.5 watch ctl-run", absl::Seconds(3));
  absl::SleepFor(absl::Milliseconds(1500));
  ASSERT_TRUE(client.Report("ctl-run", 7, 0, 4.0).ok());
  Output live = Finish(std::move(watch));
  EXPECT_EQ(live.exit_code, 124) << live.text;
  EXPECT_THAT(
      live.text,
      MatchesRegex(
          " +STEP +TOTAL_NORM +CLIP_COEF +ACTION +REASON +SPREAD_S +SLOWEST\n"
          " +7 +2 +1 +none +within_max_norm +0 +0\n"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
