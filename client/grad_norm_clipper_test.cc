#include "client/grad_norm_clipper.h"

#include <cmath>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "client/in_memory_communicator.h"
#include "client/single_process_communicator.h"
#include "common/exact_sum.h"
#include "gmock/gmock.h"
#include "gradnorm/v1/coordinator_mock.grpc.pb.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using ::gradnorm::v1::MockCoordinatorStub;
using ::testing::_;
using ::testing::AnyNumber;
using ::testing::HasSubstr;
using ::testing::Invoke;
using ::testing::Return;

std::vector<GradTensor> Views(std::vector<float>& a, std::vector<float>& b) {
  return {GradTensor::Cpu(a.data(), a.size()),
          GradTensor::Cpu(b.data(), b.size())};
}

TEST(GradNormClipperTest, SingleJobClipsAboveMaxNorm) {
  SingleProcessCommunicator solo;
  GradNormClipperOptions options;
  options.max_norm = 1.0;
  auto clipper = GradNormClipper::Create(&solo, &solo, &solo, options);
  ASSERT_TRUE(clipper.ok()) << clipper.status();
  std::vector<float> a = {3, 4}, b = {1, 2};
  absl::StatusOr<StepResult> r = (*clipper)->Step(0, Views(a, b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->total_norm, 5.477225575051661);
  EXPECT_EQ(r->action, v1::ACTION_CLIP);
  EXPECT_EQ(r->reason, v1::REASON_ABOVE_MAX_NORM);
  EXPECT_EQ(r->clip_coef, 1.0 / (5.477225575051661 + 1e-6));
  EXPECT_EQ(r->job_partial, 30.0);
  EXPECT_EQ(a[0], 3.0f * static_cast<float>(r->clip_coef));
  EXPECT_EQ(b[1], 2.0f * static_cast<float>(r->clip_coef));

  // The per-step stream overload (the Python Clipper's, with torch's current
  // stream) decides and clips the same; CPU tensors ignore the stream.
  std::vector<float> c = {3, 4}, d = {1, 2};
  absl::StatusOr<StepResult> on_stream =
      (*clipper)->Step(1, Views(c, d), /*cuda_stream=*/nullptr);
  ASSERT_TRUE(on_stream.ok()) << on_stream.status();
  EXPECT_EQ(on_stream->total_norm, r->total_norm);
  EXPECT_EQ(on_stream->clip_coef, r->clip_coef);
  EXPECT_EQ(c, a);
  EXPECT_EQ(d, b);
}

TEST(GradNormClipperTest, SingleJobLeavesSmallGradientsAlone) {
  SingleProcessCommunicator solo;
  GradNormClipperOptions options;
  options.max_norm = 10.0;
  auto clipper = GradNormClipper::Create(&solo, &solo, &solo, options);
  ASSERT_TRUE(clipper.ok());
  std::vector<float> a = {3, 4}, b = {1, 2};
  absl::StatusOr<StepResult> r = (*clipper)->Step(0, Views(a, b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action, v1::ACTION_NONE);
  EXPECT_EQ(r->clip_coef, 1.0);
  EXPECT_EQ(r->reason_detail, "norm 5.47723 <= max_norm 10");
  EXPECT_EQ(a, (std::vector<float>{3, 4}));
}

TEST(GradNormClipperTest, NonFiniteSkipsOrFails) {
  SingleProcessCommunicator solo;
  GradNormClipperOptions options;
  options.max_norm = 1.0;
  std::vector<float> a = {3, std::numeric_limits<float>::quiet_NaN()},
                     b = {1, 2};
  auto clipper = GradNormClipper::Create(&solo, &solo, &solo, options);
  absl::StatusOr<StepResult> r = (*clipper)->Step(0, Views(a, b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->action, v1::ACTION_SKIP);
  EXPECT_EQ(r->reason, v1::REASON_NONFINITE);
  EXPECT_TRUE(r->nonfinite);
  EXPECT_EQ(a[0], 3.0f);
  EXPECT_EQ(b, (std::vector<float>{1, 2}));

  options.error_if_nonfinite = true;
  auto strict = GradNormClipper::Create(&solo, &solo, &solo, options);
  EXPECT_EQ((*strict)->Step(0, Views(a, b)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(b, (std::vector<float>{1, 2}));
}

TEST(GradNormClipperTest, RejectsBadArguments) {
  SingleProcessCommunicator solo;
  GradNormClipperOptions options;
  EXPECT_EQ(
      GradNormClipper::Create(nullptr, &solo, &solo, options).status().code(),
      absl::StatusCode::kInvalidArgument);
  options.norm_type = 0;
  EXPECT_EQ(
      GradNormClipper::Create(&solo, &solo, &solo, options).status().code(),
      absl::StatusCode::kInvalidArgument);
  options.norm_type = 2;
  CoordinatorBinding binding;
  binding.run_id = "run7";
  absl::Status status =
      GradNormClipper::Create(&solo, &solo, &solo, options, binding).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "the job leader (job rank 0) needs a CoordinatorClient");
  binding.progress_interval = absl::ZeroDuration();
  status =
      GradNormClipper::Create(&solo, &solo, &solo, options, binding).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "coordinator binding progress_interval is 0; expected > 0 (and "
            "well below the job communicator's timeout)");
}

// Two ranks of one job (DP = 2), reporting through a mocked coordinator.
class TwoRankJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dp_ = *CreateInMemoryGroup(2, absl::Seconds(5));
    job_ = *CreateInMemoryGroup(2, absl::Seconds(5));
    auto stub = std::make_unique<MockCoordinatorStub>();
    stub_ = stub.get();
    // Unless a test says otherwise, run7 exists with p = 2.
    EXPECT_CALL(*stub_, GetRun(_, _, _))
        .Times(AnyNumber())
        .WillRepeatedly(Invoke(&RunWithNormType2));
    CoordinatorClientOptions options;
    options.initial_backoff = absl::Milliseconds(1);
    options.max_backoff = absl::Milliseconds(5);
    client_ = std::shared_ptr<CoordinatorClient>(
        *CoordinatorClient::CreateWithStub(std::move(stub), options));
  }

  static grpc::Status RunWithNormType2(grpc::ClientContext*,
                                       const v1::GetRunRequest& request,
                                       v1::GetRunResponse* response) {
    EXPECT_EQ(request.run_id(), "run7");
    response->mutable_run()->set_run_id("run7");
    response->mutable_run()->mutable_config()->set_norm_type(2);
    return grpc::Status::OK;
  }

  // Creates a clipper on each rank (in parallel) and runs one step. Only the
  // leader gets the client and `config`.
  std::vector<absl::StatusOr<StepResult>> RunStep(
      std::vector<std::vector<float>>& grads,
      std::optional<v1::RunConfig> config = std::nullopt,
      double norm_type = 2.0, bool leader_has_client = true,
      bool exact = false) {
    std::vector<absl::StatusOr<StepResult>> results(2, absl::UnknownError(""));
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        CoordinatorBinding binding;
        binding.client = r == 0 && leader_has_client ? client_ : nullptr;
        binding.run_id = "run7";
        binding.participant = 1;
        if (r == 0) binding.config = config;
        GradNormClipperOptions options;
        options.norm_type = norm_type;
        options.partial.exact = exact;
        auto clipper = GradNormClipper::Create(dp_[r].get(), &tp_[r],
                                               job_[r].get(), options, binding);
        if (!clipper.ok()) {
          results[r] = clipper.status();
          return;
        }
        std::vector<GradTensor> views = {
            GradTensor::Cpu(grads[r].data(), grads[r].size())};
        results[r] = (*clipper)->Step(42, views);
      });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  std::vector<std::unique_ptr<Communicator>> dp_;
  std::vector<std::unique_ptr<Communicator>> job_;
  SingleProcessCommunicator tp_[2];
  MockCoordinatorStub* stub_ = nullptr;
  std::shared_ptr<CoordinatorClient> client_;
};

TEST_F(TwoRankJobTest, LeaderReportsJobPartialAndEveryRankClipsByTheAnswer) {
  EXPECT_CALL(*stub_, Report(_, _, _))
      .WillOnce(Invoke([](grpc::ClientContext*, const v1::ReportRequest& req,
                          v1::ReportResponse* resp) {
        EXPECT_EQ(req.run_id(), "run7");
        EXPECT_EQ(req.step(), 42u);
        EXPECT_EQ(req.participant(), 1u);
        EXPECT_EQ(req.partial(), 30.0);  // 3^2 + 4^2 + 1^2 + 2^2
        EXPECT_EQ(req.num_elements(), 4u);
        v1::RoundResult* result = resp->mutable_result();
        result->set_total_norm(10.0);
        result->set_clip_coef(0.5);
        result->set_action(v1::ACTION_CLIP);
        result->set_reason(v1::REASON_ABOVE_MAX_NORM);
        result->set_reason_detail("norm 10 > max_norm 5");
        result->set_effective_max_norm(5.0);
        result->set_slowest_participant(1);
        result->set_arrival_spread_seconds(0.25);
        return grpc::Status::OK;
      }));
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->total_norm, 10.0);
    EXPECT_EQ(results[r]->clip_coef, 0.5);
    EXPECT_EQ(results[r]->action, v1::ACTION_CLIP);
    EXPECT_EQ(results[r]->reason_detail, "norm 10 > max_norm 5");
    EXPECT_EQ(results[r]->effective_max_norm, 5.0);
    EXPECT_EQ(results[r]->slowest_participant, 1u);
    EXPECT_EQ(results[r]->arrival_spread_seconds, 0.25);
  }
  EXPECT_EQ(grads[0], (std::vector<float>{1.5, 2}));
  EXPECT_EQ(grads[1], (std::vector<float>{0.5, 1}));
}

TEST_F(TwoRankJobTest, ExactPartialTravelsWholeToTheCoordinator) {
  ExactSum expected;
  for (float g : {3.0f, 4.0f, 1.0f, 1e-30f}) expected.AddSquare(g);
  EXPECT_CALL(*stub_, Report(_, _, _))
      .WillOnce(Invoke([&](grpc::ClientContext*, const v1::ReportRequest& req,
                           v1::ReportResponse* resp) {
        // The 1e-30 is lost in the double, not in the exact partial.
        EXPECT_EQ(req.partial(), 26.0);
        EXPECT_EQ(req.exact_partial(), expected.Encode());
        resp->mutable_result()->set_total_norm(5.0990195135927845);
        resp->mutable_result()->set_action(v1::ACTION_NONE);
        resp->mutable_result()->set_exact(true);
        return grpc::Status::OK;
      }));
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 1e-30f}};
  auto results = RunStep(grads, std::nullopt, 2.0, true, /*exact=*/true);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->job_partial, 26.0);
  }
}

// A run of p = 2 that is not inexact takes exact partials only: the clipper
// sends them without being asked, and an inexact run gets the double alone.
TEST_F(TwoRankJobTest, ARunThatRequiresExactPartialsGetsThem) {
  for (bool inexact : {false, true}) {
    EXPECT_CALL(*stub_, GetRun(_, _, _))
        .WillRepeatedly(
            Invoke([inexact](grpc::ClientContext*, const v1::GetRunRequest&,
                             v1::GetRunResponse* response) {
              response->mutable_run()->set_run_id("run7");
              response->mutable_run()->mutable_config()->set_norm_type(2);
              response->mutable_run()->mutable_config()->set_inexact(inexact);
              return grpc::Status::OK;
            }));
    EXPECT_CALL(*stub_, Report(_, _, _))
        .WillOnce(
            Invoke([inexact](grpc::ClientContext*, const v1::ReportRequest& req,
                             v1::ReportResponse* resp) {
              EXPECT_EQ(req.exact_partial().empty(), inexact);
              resp->mutable_result()->set_total_norm(5.477225575051661);
              resp->mutable_result()->set_action(v1::ACTION_NONE);
              resp->mutable_result()->set_exact(!inexact);
              return grpc::Status::OK;
            }));
    std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
    auto results = RunStep(grads, std::nullopt, 2.0, true, /*exact=*/false);
    for (int r = 0; r < 2; ++r) {
      ASSERT_TRUE(results[r].ok()) << results[r].status();
      EXPECT_EQ(results[r]->exact, !inexact);
    }
  }
}

TEST_F(TwoRankJobTest, SkipLeavesGradientsUntouched) {
  EXPECT_CALL(*stub_, Report(_, _, _))
      .WillOnce(Invoke([](grpc::ClientContext*, const v1::ReportRequest& req,
                          v1::ReportResponse* resp) {
        EXPECT_TRUE(std::isnan(req.partial()));
        resp->mutable_result()->set_total_norm(req.partial());
        resp->mutable_result()->set_clip_coef(1.0);
        resp->mutable_result()->set_action(v1::ACTION_SKIP);
        resp->mutable_result()->set_reason(v1::REASON_NONFINITE);
        return grpc::Status::OK;
      }));
  std::vector<std::vector<float>> grads = {
      {3, 4}, {1, std::numeric_limits<float>::quiet_NaN()}};
  auto results = RunStep(grads);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->action, v1::ACTION_SKIP);
    EXPECT_TRUE(results[r]->nonfinite);
  }
  EXPECT_EQ(grads[0], (std::vector<float>{3, 4}));
  EXPECT_EQ(grads[1][0], 1.0f);
}

TEST_F(TwoRankJobTest, LeadersCoordinatorErrorReachesEveryRank) {
  EXPECT_CALL(*stub_, Report(_, _, _))
      .WillOnce(Return(
          grpc::Status(grpc::StatusCode::NOT_FOUND, "run 'run7' is unknown")));
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(results[r].status().message(), "Report: run 'run7' is unknown");
  }
  EXPECT_EQ(grads[0], (std::vector<float>{3, 4}));
}

TEST_F(TwoRankJobTest, RegistrationFailureFailsCreateOnEveryRank) {
  EXPECT_CALL(*stub_, RegisterRun(_, _, _))
      .WillOnce(
          Invoke([](grpc::ClientContext*, const v1::RegisterRunRequest& req,
                    v1::RegisterRunResponse*) {
            EXPECT_EQ(req.config().norm_type(), 2.0);
            return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "run 'run7' exists with max_norm 1, not 2");
          }));
  EXPECT_CALL(*stub_, Report(_, _, _)).Times(0);
  v1::RunConfig config;
  config.set_max_norm(2);
  config.set_participants(2);
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads, config);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(results[r].status().message(),
              "RegisterRun: run 'run7' exists with max_norm 1, not 2");
  }
}

// The header invites setting config on the leader only: the other ranks must
// still join the leader's outcome (they used to skip it and leave the leader
// waiting in a broadcast nobody joined).
TEST_F(TwoRankJobTest, ConfigOnTheLeaderOnlyRegistersAndSteps) {
  EXPECT_CALL(*stub_, RegisterRun(_, _, _))
      .WillOnce(
          Invoke([](grpc::ClientContext*, const v1::RegisterRunRequest& req,
                    v1::RegisterRunResponse* resp) {
            EXPECT_EQ(req.config().norm_type(), 2.0);
            *resp->mutable_run()->mutable_config() = req.config();
            return grpc::Status::OK;
          }));
  EXPECT_CALL(*stub_, GetRun(_, _, _)).Times(0);
  EXPECT_CALL(*stub_, Report(_, _, _))
      .WillOnce(Invoke([](grpc::ClientContext*, const v1::ReportRequest& req,
                          v1::ReportResponse* resp) {
        resp->mutable_result()->set_total_norm(std::sqrt(req.partial()));
        resp->mutable_result()->set_action(v1::ACTION_NONE);
        return grpc::Status::OK;
      }));
  v1::RunConfig config;
  config.set_max_norm(10);
  config.set_participants(2);
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads, config);
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(results[r].ok()) << results[r].status();
    EXPECT_EQ(results[r]->total_norm, std::sqrt(30.0));
  }
}

// A leader without a client used to return before the broadcast the other
// ranks wait in; its error now reaches them.
TEST_F(TwoRankJobTest, LeaderWithoutClientFailsCreateOnEveryRank) {
  EXPECT_CALL(*stub_, GetRun(_, _, _)).Times(0);
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads, std::nullopt, 2.0, /*leader_has_client=*/false);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kInvalidArgument)
        << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(results[r].status().message(),
              "the job leader (job rank 0) needs a CoordinatorClient");
  }
}

// Without a config nothing used to compare the run's p with the clipper's: a
// run of p = 2 and a clipper of p = inf gave wrong totals silently.
TEST_F(TwoRankJobTest, RunWithAnotherNormTypeFailsCreateOnEveryRank) {
  EXPECT_CALL(*stub_, Report(_, _, _)).Times(0);
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads, std::nullopt, kInf);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kFailedPrecondition)
        << "rank " << r << ": " << results[r].status();
    EXPECT_EQ(results[r].status().message(),
              "run run7 has norm_type 2 but the clipper's norm_type is inf; "
              "expected the same p (the coordinator combines the jobs' "
              "partials with the run's)");
  }
}

TEST_F(TwoRankJobTest, RegisteredRunWithAnotherNormTypeFailsCreate) {
  // The coordinator answers with the run as stored, whatever was sent.
  EXPECT_CALL(*stub_, RegisterRun(_, _, _))
      .WillOnce(
          Invoke([](grpc::ClientContext*, const v1::RegisterRunRequest& req,
                    v1::RegisterRunResponse* resp) {
            *resp->mutable_run()->mutable_config() = req.config();
            resp->mutable_run()->mutable_config()->set_norm_type(1);
            return grpc::Status::OK;
          }));
  v1::RunConfig config;
  config.set_participants(2);
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads, config);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(),
              absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(std::string(results[r].status().message()),
                HasSubstr("run run7 has norm_type 1 but the clipper's "
                          "norm_type is 2"));
  }
}

TEST_F(TwoRankJobTest, UnknownRunWithoutConfigIsNotFoundOnEveryRank) {
  EXPECT_CALL(*stub_, GetRun(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                    "run run7 is not registered; register it "
                                    "with RegisterRun first")));
  std::vector<std::vector<float>> grads = {{3, 4}, {1, 2}};
  auto results = RunStep(grads);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r].status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(results[r].status().message(),
              "GetRun: run run7 is not registered; register it with "
              "RegisterRun first (the clipper registers the run only when the "
              "job leader's CoordinatorBinding has a config)");
  }
}

}  // namespace
}  // namespace gradnorm
