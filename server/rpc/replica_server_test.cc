// A replica's port in front of a whole CoordinatorServer, with a memory
// leader directory: unary calls, WatchRun's and ReportStream's streams,
// errors, tokens and deadlines pass through unchanged; a round whose
// participants reached the replica and the coordinator gets one answer;
// calls wait for a holder, and fail UNAVAILABLE (the address forgotten) when
// it is gone.
#include "server/rpc/replica_server.h"

#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/rpc/test_certificates.h"
#include "server/store/leader_directory.h"

namespace gradnorm {
namespace server {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using ::testing::HasSubstr;

constexpr char kToken[] = "trainer-token-abcdefghijklmnop";

std::string TokensFile() {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(dir != nullptr ? dir : "/tmp", "/replica_tokens");
  std::ofstream(path) << kToken << " trainer\n";
  return path;
}

class ReplicaServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    options.store = StoreKind::kMemory;
    options.tokens_file = TokensFile();
    auto coordinator = CoordinatorServer::Create(options);
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    coordinator_ = *std::move(coordinator);
    directory_.Set(coordinator_->address());
    ReplicaServerOptions replica;
    replica.listen = "127.0.0.1:0";
    replica.directory = &directory_;
    replica.max_wait = absl::Seconds(5);
    auto started = ReplicaServer::Start(replica);
    ASSERT_TRUE(started.ok()) << started.status();
    replica_ = *std::move(started);
  }

  v1::RunConfig Config(uint32_t participants) {
    v1::RunConfig config;
    config.set_participants(participants);
    config.set_max_norm(4);
    config.set_inexact(true);
    return config;
  }

  MemoryLeaderDirectory directory_;
  std::unique_ptr<CoordinatorServer> coordinator_;
  std::unique_ptr<ReplicaServer> replica_;
};

TEST_F(ReplicaServerTest, ARoundReachedThroughBothGetsOneAnswer) {
  TestClient direct(NewChannel(coordinator_->address()), kToken);
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("r", Config(2)).ok());
  for (uint64_t step = 0; step < 20; ++step) {
    auto pending = via.StartReport("r", step, 0, 9.0 + step);
    v1::RoundResult result;
    ASSERT_TRUE(direct.Report("r", step, 1, 16.0, &result).ok());
    ASSERT_TRUE(pending->WaitFor(absl::Seconds(10)));
    ASSERT_TRUE(pending->status.ok()) << pending->status.error_message();
    EXPECT_EQ(pending->response.result().SerializeAsString(),
              result.SerializeAsString());
    EXPECT_DOUBLE_EQ(result.total_norm(), std::sqrt(25.0 + step));
  }
  // Queries too; and each retry is answered with the same round.
  v1::RunInfo run;
  ASSERT_TRUE(via.GetRun("r", &run).ok());
  EXPECT_EQ(run.run_id(), "r");
  v1::RoundResult again;
  ASSERT_TRUE(via.Report("r", 3, 0, 12.0, &again).ok());
  EXPECT_DOUBLE_EQ(again.total_norm(), std::sqrt(28.0));
  EXPECT_GE(replica_->forwarded(), 23u);
}

TEST_F(ReplicaServerTest, ARunsLifecycleGoesThroughAReplica) {
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("life", Config(1)).ok());
  ASSERT_TRUE(via.Report("life", 0, 0, 4.0).ok());
  v1::FinishRunResponse finished;
  ASSERT_TRUE(via.FinishRun("life", &finished).ok());
  v1::RunInfo run;
  ASSERT_TRUE(via.GetRun("life", &run).ok());
  EXPECT_TRUE(run.finished());
  EXPECT_EQ(run.rounds(), 1u);
  // A finished run takes no more reports, through the replica as directly.
  TestClient direct(NewChannel(coordinator_->address()), kToken);
  grpc::Status late = via.Report("life", 1, 0, 4.0);
  grpc::Status late_direct = direct.Report("life", 1, 0, 4.0);
  EXPECT_NE(late.error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(late.error_code(), late_direct.error_code());
  EXPECT_EQ(late.error_message(), late_direct.error_message());
  // Deleting needs the admin role: the trainer token is refused, as it
  // would be directly.
  EXPECT_EQ(via.DeleteRun("life").error_code(),
            direct.DeleteRun("life").error_code());
}

TEST_F(ReplicaServerTest, ErrorsAndTokensPassThroughUnchanged) {
  TestClient via(NewChannel(replica_->address()), kToken);
  TestClient direct(NewChannel(coordinator_->address()), kToken);
  grpc::Status through = via.Report("missing", 0, 0, 1.0);
  grpc::Status there = direct.Report("missing", 0, 0, 1.0);
  EXPECT_EQ(through.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(through.error_code(), there.error_code());
  EXPECT_EQ(through.error_message(), there.error_message());

  TestClient anonymous(NewChannel(replica_->address()), "");
  grpc::Status refused = anonymous.RegisterRun("r", Config(1));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  TestClient wrong(NewChannel(replica_->address()), "not-a-token-xxxxxxxxxx");
  EXPECT_EQ(wrong.RegisterRun("r", Config(1)).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ReplicaServerTest, ARoundTimeoutNamesTheMissingAsOneCoordinatorDoes) {
  TestClient via(NewChannel(replica_->address()), kToken);
  TestClient direct(NewChannel(coordinator_->address()), kToken);
  v1::RunConfig config = Config(3);
  config.set_round_timeout_ms(300);
  ASSERT_TRUE(via.RegisterRun("late", config).ok());
  grpc::Status through = via.Report("late", 0, 0, 1.0);
  grpc::Status there = direct.Report("late", 1, 0, 1.0);
  EXPECT_EQ(through.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(through.error_code(), there.error_code());
  EXPECT_THAT(through.error_message(), HasSubstr("timed out after 300 ms"));
  // The same words but the step.
  std::string expected = there.error_message();
  const size_t step = expected.find("step 1");
  ASSERT_NE(step, std::string::npos) << expected;
  expected.replace(step, 6, "step 0");
  EXPECT_EQ(through.error_message(), expected);
}

TEST_F(ReplicaServerTest, TheClientsDeadlineGoesWithTheCall) {
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("r", Config(2)).ok());
  const absl::Time start = absl::Now();
  grpc::Status status =
      via.Report("r", 0, 0, 1.0, nullptr, absl::Milliseconds(500));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

TEST_F(ReplicaServerTest, StreamsPassThroughMessageByMessage) {
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("s", Config(1)).ok());
  auto channel = NewChannel(replica_->address());
  auto stub = v1::Coordinator::NewStub(channel);

  // WatchRun: rounds arrive as they are finalized.
  grpc::ClientContext watch_context;
  watch_context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  v1::WatchRunRequest watch_request;
  watch_request.set_run_id("s");
  auto watch = stub->WatchRun(&watch_context, watch_request);

  // ReportStream: one answer per report, in order, on one stream.
  grpc::ClientContext stream_context;
  stream_context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  auto stream = stub->ReportStream(&stream_context);
  for (uint64_t step = 0; step < 5; ++step) {
    v1::ReportStreamRequest request;
    request.mutable_report()->set_run_id("s");
    request.mutable_report()->set_step(step);
    request.mutable_report()->set_partial(step * step);
    ASSERT_TRUE(stream->Write(request));
    v1::ReportStreamResponse response;
    ASSERT_TRUE(stream->Read(&response));
    ASSERT_TRUE(response.has_result()) << response.DebugString();
    EXPECT_DOUBLE_EQ(response.result().total_norm(), step);
  }
  stream->WritesDone();
  grpc::Status stream_status = stream->Finish();
  EXPECT_TRUE(stream_status.ok()) << stream_status.error_message();

  for (uint64_t step = 0; step < 5; ++step) {
    v1::RoundResult round;
    ASSERT_TRUE(watch->Read(&round));
    EXPECT_EQ(round.step(), step);
  }
  watch_context.TryCancel();
  while (watch->Read(nullptr)) {
  }
  EXPECT_EQ(watch->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

TEST_F(ReplicaServerTest, CallsWaitForAHolderThenFailUnavailable) {
  directory_.Set("");
  replica_->SetServing(false);
  TestClient via(NewChannel(replica_->address()), kToken);
  EXPECT_EQ(via.Health(), "NOT_SERVING");
  EXPECT_EQ(via.Health("gradnorm.v1.Process"), "SERVING");

  // A holder appears while the call waits: it is forwarded then.
  std::thread later([&] {
    absl::SleepFor(absl::Milliseconds(300));
    directory_.Set(coordinator_->address());
    replica_->SetServing(true);
  });
  const absl::Time start = absl::Now();
  grpc::Status registered = via.RegisterRun("w", Config(1));
  later.join();
  EXPECT_TRUE(registered.ok()) << registered.error_message();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  EXPECT_EQ(via.Health(), "SERVING");

  // None appears: UNAVAILABLE at the deadline, naming why.
  directory_.Set("");
  std::thread expire([&] {
    absl::SleepFor(absl::Milliseconds(300));
    directory_.ExpireWaiters(absl::Now() + absl::Hours(1));
  });
  grpc::Status waited = via.Report("w", 0, 0, 1.0);
  expire.join();
  EXPECT_EQ(waited.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(waited.error_message(),
              HasSubstr("no coordinator holds the database"));
}

TEST_F(ReplicaServerTest, AStreamKeptOpenEndsWhenTheHolderGoes) {
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("k", Config(1)).ok());
  auto stub = v1::Coordinator::NewStub(NewChannel(replica_->address()));
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Bearer ", kToken));
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto stream = stub->ReportStream(&context);
  v1::ReportStreamRequest request;
  request.mutable_report()->set_run_id("k");
  request.mutable_report()->set_partial(4);
  ASSERT_TRUE(stream->Write(request));
  v1::ReportStreamResponse response;
  ASSERT_TRUE(stream->Read(&response));
  // The client keeps its stream open (it never half-closes); the holder
  // goes: the stream ends with UNAVAILABLE, and does not hang.
  const absl::Time start = absl::Now();
  ASSERT_TRUE(coordinator_->Shutdown().ok());
  EXPECT_FALSE(stream->Read(&response));
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << status.error_message();
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
}

TEST_F(ReplicaServerTest, ShutdownDoesNotWaitForCallsWaitingForAHolder) {
  directory_.Set("");
  TestClient via(NewChannel(replica_->address()), kToken);
  auto pending = via.StartReport("any", 0, 0, 1.0, absl::Seconds(30));
  absl::SleepFor(absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  replica_->Shutdown(absl::Milliseconds(100));
  EXPECT_LT(absl::Now() - start, absl::Seconds(3));
  ASSERT_TRUE(pending->WaitFor(absl::Seconds(5)));
  EXPECT_FALSE(pending->status.ok());
  // The directory answers the abandoned lookup later; nothing is left to
  // touch.
  directory_.Set(coordinator_->address());
}

TEST_F(ReplicaServerTest, AGoneHolderIsUnavailableAndForgotten) {
  TestClient via(NewChannel(replica_->address()), kToken);
  ASSERT_TRUE(via.RegisterRun("g", Config(1)).ok());
  ASSERT_TRUE(coordinator_->Shutdown().ok());
  grpc::Status status = via.Report("g", 0, 0, 1.0);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_GE(directory_.forgotten(), 1);
}

// Mutual TLS on both ports: the replica checks the client's certificate and
// reaches the holder over TLS with its own.
TEST(ReplicaServerTlsTest, ForwardsOverMutualTls) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/mtls");
  mkdir(dir.c_str(), 0700);
  ASSERT_TRUE(MakeTestCertificates(dir).ok());
  TlsFiles tls{.cert = dir + "/server.crt",
               .key = dir + "/server.key",
               .client_ca = dir + "/ca.crt"};
  CoordinatorServerOptions options;
  options.listen = "127.0.0.1:0";
  options.store = StoreKind::kMemory;
  options.tokens_file = TokensFile();
  options.tls = tls;
  auto coordinator = CoordinatorServer::Create(options);
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();
  MemoryLeaderDirectory directory;
  directory.Set((*coordinator)->address());

  EXPECT_EQ(PeerCredentials(tls, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  auto peer = PeerCredentials(tls, dir + "/ca.crt");
  ASSERT_TRUE(peer.ok()) << peer.status();
  ReplicaServerOptions replica_options;
  replica_options.listen = "127.0.0.1:0";
  replica_options.directory = &directory;
  replica_options.tls = tls;
  replica_options.peer_credentials = *peer;
  auto replica = ReplicaServer::Start(replica_options);
  ASSERT_TRUE(replica.ok()) << replica.status();

  auto client_credentials = [&](bool with_certificate) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = *ReadPem(dir + "/ca.crt");
    if (with_certificate) {
      ssl.pem_cert_chain = *ReadPem(dir + "/client.crt");
      ssl.pem_private_key = *ReadPem(dir + "/client.key");
    }
    return grpc::SslCredentials(ssl);
  };
  TestClient trainer(
      NewChannel((*replica)->address(), client_credentials(true)), kToken);
  v1::RunConfig config;
  config.set_participants(1);
  config.set_max_norm(4);
  config.set_inexact(true);
  grpc::Status registered = trainer.RegisterRun("tls", config);
  ASSERT_TRUE(registered.ok()) << registered.error_message();
  v1::RoundResult result;
  grpc::Status reported = trainer.Report("tls", 0, 0, 9.0, &result);
  ASSERT_TRUE(reported.ok()) << reported.error_message();
  EXPECT_EQ(result.total_norm(), 3.0);

  TestClient stranger(
      NewChannel((*replica)->address(), client_credentials(false)), kToken);
  EXPECT_EQ(
      stranger.Report("tls", 1, 0, 9.0, nullptr, absl::Seconds(3)).error_code(),
      grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
