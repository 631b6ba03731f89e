// CoordinatorClient's ReportStream path against real gRPC servers: reports
// ride one stream per client, per-report errors leave it usable, a hung
// coordinator is cut off at the report's deadline, a coordinator restart is
// retried on a new stream, and a coordinator without ReportStream gets plain
// Report calls.
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/coordinator_client.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/coordinator_test_util.h"

namespace gradnorm {
namespace {

using ::gradnorm::server::testing::ServeOnLoopback;
using ::testing::HasSubstr;

v1::RunConfig Config(uint32_t participants) {
  v1::RunConfig config;
  config.set_norm_type(2);
  config.set_max_norm(100);
  config.set_participants(participants);
  config.set_inexact(true);  // doubles are reported
  return config;
}

v1::ReportRequest Report(const std::string& run_id, uint64_t step,
                         uint32_t participant, double partial) {
  v1::ReportRequest request;
  request.set_run_id(run_id);
  request.set_step(step);
  request.set_participant(participant);
  request.set_partial(partial);
  return request;
}

std::unique_ptr<CoordinatorClient> NewClient(const std::string& target) {
  CoordinatorClientOptions options;
  options.target = target;
  options.initial_backoff = absl::Milliseconds(20);
  options.max_backoff = absl::Milliseconds(200);
  absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
      CoordinatorClient::Create(options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? *std::move(client) : nullptr;
}

std::unique_ptr<server::CoordinatorServer> StartCoordinator(
    const std::string& listen, const std::string& db = "") {
  server::CoordinatorServerOptions options;
  options.listen = listen;
  options.store =
      db.empty() ? server::StoreKind::kMemory : server::StoreKind::kSqlite;
  options.db_path = db;
  auto server = server::CoordinatorServer::Create(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? *std::move(server) : nullptr;
}

TEST(CoordinatorClientStreamTest, ReportsRideOneStreamPerClient) {
  auto coordinator = StartCoordinator("127.0.0.1:0");
  ASSERT_NE(coordinator, nullptr);
  auto c0 = NewClient(coordinator->address());
  auto c1 = NewClient(coordinator->address());
  ASSERT_TRUE(
      c0->RegisterRun("r", Config(2), absl::Now() + absl::Seconds(10)).ok());
  for (uint64_t step = 0; step < 5; ++step) {
    absl::StatusOr<v1::RoundResult> r1;
    std::thread other([&] {
      r1 = c1->Report(Report("r", step, 1, 16.0),
                      absl::Now() + absl::Seconds(10));
    });
    absl::StatusOr<v1::RoundResult> r0 =
        c0->Report(Report("r", step, 0, 9.0), absl::Now() + absl::Seconds(10));
    other.join();
    ASSERT_TRUE(r0.ok()) << r0.status();
    ASSERT_TRUE(r1.ok()) << r1.status();
    EXPECT_EQ(r0->total_norm(), 5.0);
    EXPECT_EQ(r0->SerializeAsString(), r1->SerializeAsString());
  }
  // A report's error comes back as Report's would, and the stream stays.
  absl::StatusOr<v1::RoundResult> conflict =
      c0->Report(Report("r", 2, 0, 1.0), absl::Now() + absl::Seconds(10));
  EXPECT_EQ(conflict.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(conflict.status().message(), HasSubstr("Report: "));
  absl::StatusOr<v1::RoundResult> unknown =
      c0->Report(Report("nobody", 0, 0, 1.0), absl::Now() + absl::Seconds(10));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  // Retried (idempotent) report: the stored result.
  absl::StatusOr<v1::RoundResult> again =
      c0->Report(Report("r", 3, 0, 9.0), absl::Now() + absl::Seconds(10));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->step(), 3u);
  EXPECT_EQ(c0->streams_opened(), 1u);
  EXPECT_EQ(c1->streams_opened(), 1u);
  EXPECT_EQ(c0->retries(), 0u);
}

TEST(CoordinatorClientStreamTest,
     ConcurrentReportsOfOneClientDoNotWaitForEachOther) {
  auto coordinator = StartCoordinator("127.0.0.1:0");
  ASSERT_NE(coordinator, nullptr);
  // One client is both participants: the second report must not queue
  // behind the first, which waits for it.
  auto client = NewClient(coordinator->address());
  ASSERT_TRUE(
      client->RegisterRun("r", Config(2), absl::Now() + absl::Seconds(10))
          .ok());
  absl::StatusOr<v1::RoundResult> first;
  std::thread waiter([&] {
    first =
        client->Report(Report("r", 0, 0, 9.0), absl::Now() + absl::Seconds(20));
  });
  absl::SleepFor(absl::Milliseconds(100));
  absl::StatusOr<v1::RoundResult> second =
      client->Report(Report("r", 0, 1, 16.0), absl::Now() + absl::Seconds(20));
  waiter.join();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->total_norm(), 5.0);
  EXPECT_EQ(second->total_norm(), 5.0);
}

// A coordinator that takes reports on its stream and never answers them.
class SilentService final : public v1::Coordinator::CallbackService {
 public:
  grpc::ServerBidiReactor<v1::ReportStreamRequest, v1::ReportStreamResponse>*
  ReportStream(grpc::CallbackServerContext* /*context*/) override {
    class Reactor final
        : public grpc::ServerBidiReactor<v1::ReportStreamRequest,
                                         v1::ReportStreamResponse> {
     public:
      Reactor() { StartRead(&request_); }
      void OnReadDone(bool ok) override {
        if (ok) {
          StartRead(&request_);
        } else {
          Finish(grpc::Status::OK);
        }
      }
      void OnCancel() override {}
      void OnDone() override { delete this; }

     private:
      v1::ReportStreamRequest request_;
    };
    return new Reactor();
  }
};

TEST(CoordinatorClientStreamTest, HungCoordinatorIsCutOffAtTheDeadline) {
  SilentService service;
  std::string address;
  std::unique_ptr<grpc::Server> server = ServeOnLoopback(&service, &address);
  auto client = NewClient(address);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::RoundResult> result =
        client->Report(Report("r", 7, 0, 1.0), start + absl::Milliseconds(300));
    const absl::Duration took = absl::Now() - start;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(result.status().message(),
                HasSubstr("no answer for step 7 before the deadline"));
    EXPECT_GE(took, absl::Milliseconds(290));
    EXPECT_LT(took, absl::Seconds(10));
    // The cancelled stream is dropped; the next report opens another.
    EXPECT_EQ(client->streams_opened(), static_cast<uint64_t>(attempt));
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

// A coordinator of an older build: Report only.
class ReportOnlyService final : public v1::Coordinator::CallbackService {
 public:
  grpc::ServerUnaryReactor* Report(grpc::CallbackServerContext* context,
                                   const v1::ReportRequest* request,
                                   v1::ReportResponse* response) override {
    response->mutable_result()->set_run_id(request->run_id());
    response->mutable_result()->set_step(request->step());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

TEST(CoordinatorClientStreamTest,
     CoordinatorWithoutReportStreamGetsReportCalls) {
  ReportOnlyService old;
  std::string address;
  std::unique_ptr<grpc::Server> server = ServeOnLoopback(&old, &address);
  auto client = NewClient(address);
  for (uint64_t step = 0; step < 2; ++step) {
    absl::StatusOr<v1::RoundResult> result = client->Report(
        Report("r", step, 0, 4.0), absl::Now() + absl::Seconds(10));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->step(), step);
  }
  // Tried once, UNIMPLEMENTED, never again.
  EXPECT_EQ(client->streams_opened(), 1u);
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

TEST(CoordinatorClientStreamTest, RestartedCoordinatorIsFoundOnANewStream) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string db =
      absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/restart.db");
  std::remove(db.c_str());
  auto coordinator = StartCoordinator("127.0.0.1:0", db);
  ASSERT_NE(coordinator, nullptr);
  const std::string address = coordinator->address();
  auto c0 = NewClient(address);
  auto c1 = NewClient(address);
  ASSERT_TRUE(
      c0->RegisterRun("r", Config(2), absl::Now() + absl::Seconds(10)).ok());
  // Participant 0 waits in step 0 when the coordinator goes down.
  absl::StatusOr<v1::RoundResult> r0;
  absl::Notification reported;
  std::thread waiter([&] {
    r0 = c0->Report(Report("r", 0, 0, 9.0), absl::Now() + absl::Seconds(30));
    reported.Notify();
  });
  for (int i = 0; i < 1000 && coordinator->aggregator()->Stats().waiters < 1;
       ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_TRUE(coordinator->Shutdown().ok());
  coordinator.reset();
  EXPECT_FALSE(reported.HasBeenNotified());
  coordinator = StartCoordinator(address, db);
  ASSERT_NE(coordinator, nullptr);
  absl::StatusOr<v1::RoundResult> r1 =
      c1->Report(Report("r", 0, 1, 16.0), absl::Now() + absl::Seconds(30));
  waiter.join();
  ASSERT_TRUE(r0.ok()) << r0.status();
  ASSERT_TRUE(r1.ok()) << r1.status();
  EXPECT_EQ(r0->total_norm(), 5.0);
  EXPECT_EQ(r0->SerializeAsString(), r1->SerializeAsString());
  // Every retry (one or more, as the restart takes) went out on a new stream.
  EXPECT_GE(c0->retries(), 1u);
  EXPECT_EQ(c0->streams_opened(), c0->retries() + 1);
}

}  // namespace
}  // namespace gradnorm
