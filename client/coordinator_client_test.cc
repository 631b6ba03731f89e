#include "client/coordinator_client.h"

#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gradnorm/v1/coordinator_mock.grpc.pb.h"
#include "grpc/impl/codegen/grpc_types.h"
#include "grpcpp/test/client_context_test_peer.h"
#include "grpcpp/test/mock_stream.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace {

using ::gradnorm::v1::MockCoordinatorStub;
using ::testing::_;
using ::testing::DoAll;
using ::testing::Invoke;
using ::testing::Return;
using ::testing::SetArgPointee;

CoordinatorClientOptions FastRetries() {
  CoordinatorClientOptions options;
  options.initial_backoff = absl::Milliseconds(5);
  options.max_backoff = absl::Milliseconds(20);
  return options;
}

std::unique_ptr<CoordinatorClient> ClientWith(
    std::unique_ptr<MockCoordinatorStub> stub,
    CoordinatorClientOptions options = FastRetries()) {
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      CoordinatorClient::CreateWithStub(std::move(stub), options);
  EXPECT_TRUE(client.ok()) << client.status();
  return std::move(client).value();
}

v1::ReportRequest Request() {
  v1::ReportRequest request;
  request.set_run_id("run7");
  request.set_step(12);
  request.set_participant(1);
  request.set_partial(30.0);
  return request;
}

v1::ReportResponse Response(double total) {
  v1::ReportResponse response;
  response.mutable_result()->set_run_id("run7");
  response.mutable_result()->set_step(12);
  response.mutable_result()->set_total_norm(total);
  response.mutable_result()->set_action(v1::ACTION_CLIP);
  return response;
}

TEST(CoordinatorClientTest, ReportSendsTokenAndDeadlineAndReturnsResult) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  CoordinatorClientOptions options = FastRetries();
  options.bearer_token = "s3cret";
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  EXPECT_CALL(*stub, Report(_, _, _))
      .WillOnce(Invoke([&](grpc::ClientContext* context,
                           const v1::ReportRequest& request,
                           v1::ReportResponse* response) {
        grpc::testing::ClientContextTestPeer peer(context);
        std::multimap<std::string, std::string> metadata =
            peer.GetSendInitialMetadata();
        EXPECT_EQ(metadata.count("authorization"), 1u);
        EXPECT_EQ(metadata.find("authorization")->second, "Bearer s3cret");
        EXPECT_LE(
            absl::AbsDuration(absl::FromChrono(context->deadline()) - deadline),
            absl::Milliseconds(1));
        EXPECT_EQ(request.run_id(), "run7");
        EXPECT_EQ(request.participant(), 1u);
        EXPECT_EQ(request.partial(), 30.0);
        *response = Response(5.5);
        return grpc::Status::OK;
      }));
  auto client = ClientWith(std::move(stub), options);
  absl::StatusOr<v1::RoundResult> result = client->Report(Request(), deadline);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 5.5);
  EXPECT_EQ(result->action(), v1::ACTION_CLIP);
  EXPECT_EQ(client->retries(), 0u);
}

TEST(CoordinatorClientTest, RetriesUnavailableUntilTheResultComes) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  EXPECT_CALL(*stub, Report(_, _, _))
      .WillOnce(
          Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting")))
      .WillOnce(
          Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting")))
      .WillOnce(
          DoAll(SetArgPointee<2>(Response(7.0)), Return(grpc::Status::OK)));
  auto client = ClientWith(std::move(stub));
  absl::StatusOr<v1::RoundResult> result =
      client->Report(Request(), absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 7.0);
  EXPECT_EQ(client->retries(), 2u);
}

TEST(CoordinatorClientTest, OtherErrorsAreNotRetried) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  EXPECT_CALL(*stub, Report(_, _, _))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                                    "participant 1 reported 30 then 31")));
  auto client = ClientWith(std::move(stub));
  absl::StatusOr<v1::RoundResult> result =
      client->Report(Request(), absl::Now() + absl::Seconds(30));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(result.status().message(),
            "Report: participant 1 reported 30 then 31");
}

TEST(CoordinatorClientTest, GivesUpAtTheDeadline) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  EXPECT_CALL(*stub, Report(_, _, _))
      .WillRepeatedly(Return(
          grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused")));
  auto client = ClientWith(std::move(stub));
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::RoundResult> result =
      client->Report(Request(), start + absl::Milliseconds(300));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(absl::StartsWith(
      result.status().message(),
      "Report: the coordinator stayed unavailable until the deadline ("))
      << result.status();
  EXPECT_TRUE(absl::EndsWith(result.status().message(),
                             "last error: Report: connection refused"))
      << result.status();
  EXPECT_LE(took, absl::Milliseconds(400));
  // Not before the deadline: a caller can tell its deadline's end by the time.
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_GE(client->retries(), 5u);
}

TEST(CoordinatorClientTest, GetRunReturnsTheStoredRunAndRetriesUnavailable) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  v1::GetRunResponse response;
  response.mutable_run()->set_run_id("run7");
  response.mutable_run()->mutable_config()->set_norm_type(2);
  EXPECT_CALL(*stub, GetRun(_, _, _))
      .WillOnce(
          Return(grpc::Status(grpc::StatusCode::UNAVAILABLE, "restarting")))
      .WillOnce(
          Invoke([&](grpc::ClientContext*, const v1::GetRunRequest& request,
                     v1::GetRunResponse* out) {
            EXPECT_EQ(request.run_id(), "run7");
            *out = response;
            return grpc::Status::OK;
          }))
      .WillOnce(Return(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                    "run run8 is not registered")));
  auto client = ClientWith(std::move(stub));
  absl::StatusOr<v1::RunInfo> run =
      client->GetRun("run7", absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->run_id(), "run7");
  EXPECT_EQ(run->config().norm_type(), 2.0);
  EXPECT_EQ(client->retries(), 1u);
  absl::Status unknown =
      client->GetRun("run8", absl::Now() + absl::Seconds(5)).status();
  EXPECT_EQ(unknown.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.message(), "GetRun: run run8 is not registered");
}

using MockReportStream =
    grpc::testing::MockClientReaderWriter<v1::ReportStreamRequest,
                                          v1::ReportStreamResponse>;

v1::ReportStreamResponse StreamAnswer(uint64_t step, double total) {
  v1::ReportStreamResponse answer;
  answer.set_step(step);
  *answer.mutable_result() = Response(total).result();
  answer.mutable_result()->set_step(step);
  return answer;
}

// The watchdog fires at the deadline while Read is returning the round's
// answer (before Disarm): the answer is final and must not be dropped for a
// DEADLINE_EXCEEDED; the cancelled stream is still replaced.
TEST(CoordinatorClientTest, AnswerReadAsTheWatchdogFiresIsKept) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  const absl::Time deadline = absl::Now() + absl::Milliseconds(50);
  // Owned by the client once ReportStreamRaw returns them.
  auto* cancelled = new MockReportStream;
  EXPECT_CALL(*cancelled, Write(_, _)).WillOnce(Return(true));
  EXPECT_CALL(*cancelled, Read(_))
      .WillOnce(Invoke([&](v1::ReportStreamResponse* answer) {
        // The watchdog wakes at the deadline; a second later it has fired.
        absl::SleepFor(deadline + absl::Seconds(1) - absl::Now());
        *answer = StreamAnswer(12, 5.5);
        return true;
      }));
  EXPECT_CALL(*cancelled, Finish())
      .WillOnce(Return(grpc::Status(grpc::StatusCode::CANCELLED, "Cancelled")));
  auto* next = new MockReportStream;
  EXPECT_CALL(*next, Write(_, _)).WillOnce(Return(true));
  EXPECT_CALL(*next, Read(_))
      .WillOnce(DoAll(SetArgPointee<0>(StreamAnswer(13, 6.5)), Return(true)));
  EXPECT_CALL(*next, Finish()).WillOnce(Return(grpc::Status::OK));
  EXPECT_CALL(*stub, ReportStreamRaw(_))
      .WillOnce(Return(cancelled))
      .WillOnce(Return(next));
  auto client = ClientWith(std::move(stub));

  absl::StatusOr<v1::RoundResult> result = client->Report(Request(), deadline);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 5.5);
  EXPECT_EQ(result->step(), 12u);

  v1::ReportRequest later = Request();
  later.set_step(13);
  result = client->Report(later, absl::Now() + absl::Seconds(30));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->total_norm(), 6.5);
  EXPECT_EQ(client->streams_opened(), 2u);
}

TEST(CoordinatorClientTest, RegisterRunSendsTheConfig) {
  auto stub = std::make_unique<MockCoordinatorStub>();
  v1::RegisterRunResponse response;
  response.set_created(true);
  EXPECT_CALL(*stub, RegisterRun(_, _, _))
      .WillOnce(Invoke([&](grpc::ClientContext*,
                           const v1::RegisterRunRequest& request,
                           v1::RegisterRunResponse* out) {
        EXPECT_EQ(request.run_id(), "run7");
        EXPECT_EQ(request.config().participants(), 2u);
        EXPECT_EQ(request.config().max_norm(), 1.5);
        *out = response;
        return grpc::Status::OK;
      }));
  auto client = ClientWith(std::move(stub));
  v1::RunConfig config;
  config.set_norm_type(2);
  config.set_max_norm(1.5);
  config.set_participants(2);
  absl::StatusOr<v1::RegisterRunResponse> result =
      client->RegisterRun("run7", config, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->created());
}

TEST(CoordinatorClientTest, RejectsBadOptions) {
  CoordinatorClientOptions options;
  EXPECT_EQ(CoordinatorClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.target = "localhost:1";
  options.security = CoordinatorClientOptions::Security::kMutualTls;
  absl::Status status = CoordinatorClient::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "mutual TLS needs client_cert_pem and client_key_pem");
  options.security = CoordinatorClientOptions::Security::kInsecure;
  options.jitter = 1.5;
  EXPECT_EQ(CoordinatorClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CoordinatorClientTest, ChannelKeepaliveMatchesTheCoordinatorPolicy) {
  grpc::ChannelArguments args = CoordinatorChannelArguments({});
  grpc_channel_args raw;
  args.SetChannelArgs(&raw);
  std::map<std::string, int> ints;
  for (size_t i = 0; i < raw.num_args; ++i) {
    if (raw.args[i].type == GRPC_ARG_INTEGER) {
      ints[raw.args[i].key] = raw.args[i].value.integer;
    }
  }
  EXPECT_EQ(ints[GRPC_ARG_KEEPALIVE_TIME_MS], 30000);
  EXPECT_EQ(ints[GRPC_ARG_KEEPALIVE_TIMEOUT_MS], 10000);
  EXPECT_EQ(ints[GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS], 1);
  EXPECT_EQ(ints[GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA], 0);
  EXPECT_EQ(ints[GRPC_ARG_MAX_RECONNECT_BACKOFF_MS], 5000);
}

// A real channel to a port nobody listens on: gRPC reports UNAVAILABLE, the
// client retries and gives up at the deadline.
TEST(CoordinatorClientTest, RealChannelWithoutServerFailsAtDeadline) {
  CoordinatorClientOptions options = FastRetries();
  options.target = "127.0.0.1:1";
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      CoordinatorClient::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  const absl::Time start = absl::Now();
  absl::StatusOr<v1::RoundResult> result =
      (*client)->Report(Request(), start + absl::Seconds(1));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded)
      << result.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
}

}  // namespace
}  // namespace gradnorm
