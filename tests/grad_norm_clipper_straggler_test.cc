// GradNormClipper against a straggler job, over real gRPC: an in-process
// coordinator and two jobs of one run, one of them late by more than the
// other job's communicator timeout (CoordinatorBinding::progress_interval).
// In tests/ because it needs both client/ and server/.
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "client/grad_norm_clipper.h"
#include "client/in_memory_communicator.h"
#include "client/single_process_communicator.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_server.h"

namespace gradnorm {
namespace {

using ::testing::HasSubstr;

// Two jobs of one run against an in-process coordinator over real gRPC. Job 0
// has two ranks whose job communicator gives up after 1 s; its leader reports
// progress every 200 ms. Job 1 is one process, and may be late.
class StragglerJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server::CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    options.store = server::StoreKind::kMemory;
    auto server = server::CoordinatorServer::Create(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    dp_ = *CreateInMemoryGroup(2, absl::Seconds(1));
    job_ = *CreateInMemoryGroup(2, absl::Seconds(1));
  }

  std::shared_ptr<CoordinatorClient> NewClient() {
    CoordinatorClientOptions options;
    options.target = server_->address();
    options.initial_backoff = absl::Milliseconds(10);
    options.max_backoff = absl::Milliseconds(100);
    return std::shared_ptr<CoordinatorClient>(
        *CoordinatorClient::Create(options));
  }

  // Registers the run (p = 2, no clipping) and creates the clippers.
  void CreateClippers(absl::Duration report_timeout,
                      uint64_t round_timeout_ms = 60000) {
    std::shared_ptr<CoordinatorClient> client = NewClient();
    v1::RunConfig config;
    config.set_norm_type(2);
    config.set_max_norm(100);
    config.set_participants(2);
    config.set_round_timeout_ms(round_timeout_ms);
    absl::StatusOr<v1::RegisterRunResponse> registered = client->RegisterRun(
        "straggler-run", config, absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(registered.ok()) << registered.status();
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        CoordinatorBinding binding;
        binding.client = r == 0 ? client : nullptr;
        binding.run_id = "straggler-run";
        binding.participant = 0;
        binding.report_timeout = report_timeout;
        binding.progress_interval = absl::Milliseconds(200);
        auto clipper = GradNormClipper::Create(dp_[r].get(), &tp_[r],
                                               job_[r].get(), {}, binding);
        ASSERT_TRUE(clipper.ok()) << "rank " << r << ": " << clipper.status();
        job0_[r] = *std::move(clipper);
      });
    }
    for (std::thread& t : threads) t.join();
    CoordinatorBinding binding;
    binding.client = NewClient();
    binding.run_id = "straggler-run";
    binding.participant = 1;
    auto clipper = GradNormClipper::Create(&job1_comm_, &job1_comm_,
                                           &job1_comm_, {}, binding);
    ASSERT_TRUE(clipper.ok()) << clipper.status();
    job1_ = *std::move(clipper);
  }

  // Job 0's ranks step (S = 3^2 + 4^2 + 1^2 + 2^2 = 30) while job 1 steps
  // (S = 5^2) `job1_delay` later, or never.
  std::vector<absl::StatusOr<StepResult>> RunStep(
      uint64_t step, std::optional<absl::Duration> job1_delay) {
    std::vector<absl::StatusOr<StepResult>> results(2, absl::UnknownError(""));
    std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        results[r] = job0_[r]->Step(
            step, {GradTensor::Cpu(grads[r].data(), grads[r].size())});
      });
    }
    if (job1_delay.has_value()) {
      threads.emplace_back([&] {
        absl::SleepFor(*job1_delay);
        std::vector<float> g = {5};
        job1_result_ = job1_->Step(step, {GradTensor::Cpu(g.data(), 1)});
      });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  std::unique_ptr<server::CoordinatorServer> server_;
  std::vector<std::unique_ptr<Communicator>> dp_;
  std::vector<std::unique_ptr<Communicator>> job_;
  SingleProcessCommunicator tp_[2];
  SingleProcessCommunicator job1_comm_;
  std::unique_ptr<GradNormClipper> job0_[2];
  std::unique_ptr<GradNormClipper> job1_;
  absl::StatusOr<StepResult> job1_result_ = absl::UnknownError("not run");
};

// Job 1 is 3 s late, three times job 0's communicator timeout: job 0's ranks
// used to fail their broadcast with DEADLINE_EXCEEDED after 1 s, breaking the
// communicator, although the round completed.
TEST_F(StragglerJobTest,
       RanksWaitOutAStragglerLongerThanTheirCommunicatorTimeout) {
  CreateClippers(/*report_timeout=*/absl::Seconds(30));
  const absl::Time start = absl::Now();
  auto results = RunStep(0, absl::Seconds(3));
  EXPECT_GE(absl::Now() - start, absl::Seconds(3));
  ASSERT_TRUE(job1_result_.ok()) << job1_result_.status();
  EXPECT_DOUBLE_EQ(job1_result_->total_norm, std::sqrt(55.0));
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(results[r]->total_norm, job1_result_->total_norm);
    EXPECT_EQ(results[r]->action, v1::ACTION_NONE);
    EXPECT_EQ(results[r]->slowest_participant, 1u);
    EXPECT_GE(results[r]->arrival_spread_seconds, 2.5);
    EXPECT_EQ(results[r]->job_partial, 30.0);
  }
}

// Job 1 never reports: at report_timeout every rank of job 0 gets the same
// DEADLINE_EXCEEDED (naming the missing job), and the job communicator is
// still usable.
TEST_F(StragglerJobTest, AJobThatNeverReportsFailsEveryRankAliveAtTheTimeout) {
  CreateClippers(/*report_timeout=*/absl::Seconds(2));
  const absl::Time start = absl::Now();
  auto results = RunStep(0, std::nullopt);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(1700));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kDeadlineExceeded)
        << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(results[r].status().message(), results[0].status().message());
  }
  EXPECT_THAT(std::string(results[0].status().message()),
              HasSubstr("missing participants 1 (1 of 2 reported)"));

  std::vector<absl::Status> barriers(2);
  std::thread peer([&] { barriers[1] = job_[1]->Barrier(); });
  barriers[0] = job_[0]->Barrier();
  peer.join();
  EXPECT_TRUE(barriers[0].ok()) << barriers[0];
  EXPECT_TRUE(barriers[1].ok()) << barriers[1];
  results = RunStep(1, absl::ZeroDuration());
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << "rank " << r << ": " << results[r].status();
    EXPECT_DOUBLE_EQ(results[r]->total_norm, std::sqrt(55.0));
  }
}

// The round times out on the coordinator (1.5 s) long before report_timeout
// (30 s): that is final, so every rank of job 0 gets the coordinator's ABORTED
// at once rather than the leader repeating its report until report_timeout.
TEST_F(StragglerJobTest, ARoundThatTimesOutFailsEveryRankAtOnce) {
  CreateClippers(/*report_timeout=*/absl::Seconds(30),
                 /*round_timeout_ms=*/1500);
  const absl::Time start = absl::Now();
  auto results = RunStep(0, std::nullopt);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kAborted)
        << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(results[r].status().message(), results[0].status().message());
  }
  EXPECT_THAT(std::string(results[0].status().message()),
              HasSubstr("waiting for participants 1 (1 of 2 reported)"));
}

}  // namespace
}  // namespace gradnorm
