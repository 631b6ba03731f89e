// CoordinatorClient moves to a coordinator that starts listening while the
// client retries (a standby taking over, a restarted pod), with gRPC's 5-s
// backup poller turned off for this binary. gRPC makes progress on a
// connection attempt only while some thread polls the channel, so the client's
// waits between retries must poll it rather than sleep: a client that slept
// would reach the new coordinator only at a backup poll, or here never.
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "gtest/gtest.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace {

// Before main, so before gRPC reads its configuration.
const bool kBackupPollerOff =
    setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "0", 1) == 0;

// Two coordinator processes take turns on one SQLite database: each round
// kills the one serving, reports while none is, and starts the other on its
// own port, which the client lists second or first in its one target.
TEST(CoordinatorClientReconnectTest, MovesToACoordinatorThatStartsLater) {
  ASSERT_TRUE(kBackupPollerOff);
  absl::StatusOr<std::string> dir = MakeScratchDir("reconnect");
  ASSERT_TRUE(dir.ok()) << dir.status();
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";
  const std::vector<int> ports = {FreeLoopbackPort(), FreeLoopbackPort()};
  auto start = [&](int which) {
    return StartLocalCoordinator(
        binary, *dir, {absl::StrCat("--listen=127.0.0.1:", ports[which])});
  };
  absl::StatusOr<LocalCoordinator> serving = start(0);
  ASSERT_TRUE(serving.ok()) << serving.status();

  CoordinatorClientOptions options;
  options.target =
      absl::StrCat("ipv4:127.0.0.1:", ports[0], ",127.0.0.1:", ports[1]);
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      CoordinatorClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  v1::RunConfig config;
  config.set_participants(1);
  config.set_max_norm(1.0);
  config.set_inexact(true);  // doubles are reported
  ASSERT_TRUE(
      (*client)
          ->RegisterRun("moving", config, absl::Now() + absl::Seconds(20))
          .ok());
  auto report = [&](uint64_t step) {
    v1::ReportRequest request;
    request.set_run_id("moving");
    request.set_step(step);
    request.set_participant(0);
    request.set_partial(16.0);
    return (*client)->Report(request, absl::Now() + absl::Seconds(30));
  };
  ASSERT_TRUE(report(0).ok());

  for (uint64_t step = 1; step <= 4; ++step) {
    serving->process->Kill();
    absl::StatusOr<v1::RoundResult> result;
    std::thread job([&] { result = report(step); });
    // The client fails over to nothing, backs off and retries for a while.
    absl::SleepFor(absl::Milliseconds(700));
    const uint64_t retries_before = (*client)->retries();
    serving = start(step % 2);
    ASSERT_TRUE(serving.ok()) << serving.status();
    const absl::Time started = absl::Now();
    job.join();
    ASSERT_TRUE(result.ok()) << "step " << step << ": " << result.status();
    EXPECT_EQ(result->step(), step);
    EXPECT_EQ(result->total_norm(), 4.0);
    EXPECT_GE(retries_before, 1u) << "step " << step;
    std::printf("step %d: answered %.3f s after the coordinator served\n",
                static_cast<int>(step),
                absl::ToDoubleSeconds(absl::Now() - started));
  }
}

}  // namespace
}  // namespace gradnorm
