// Test helpers: a gRPC client of the coordinator with a bearer token,
// asynchronous Reports (callback API) for tests that need many waiters, and a
// test's own service served on loopback.
#ifndef GRADNORM_SERVER_RPC_COORDINATOR_TEST_UTIL_H_
#define GRADNORM_SERVER_RPC_COORDINATOR_TEST_UTIL_H_

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/client_callback.h"

namespace gradnorm {
namespace server {
namespace testing {

// `service` (not owned; must outlive the server) served on a free loopback
// port, plaintext; *target is its address.
inline std::unique_ptr<grpc::Server> ServeOnLoopback(grpc::Service* service,
                                                     std::string* target) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  *target = "127.0.0.1:" + std::to_string(port);
  return server;
}

// A channel of its own (not shared with other TestClients of the same target),
// as separate jobs would have.
inline std::shared_ptr<grpc::Channel> NewChannel(
    const std::string& target,
    std::shared_ptr<grpc::ChannelCredentials> creds =
        grpc::InsecureChannelCredentials(),
    const std::string& server_name_override = "") {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxSendMessageSize(-1);
  // Reconnect fast after a coordinator restart (gRPC's default backoff starts
  // at 1 s and grows to 2 minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  if (!server_name_override.empty())
    args.SetSslTargetNameOverride(server_name_override);
  return grpc::CreateCustomChannel(target, creds, args);
}

// One Report in flight; Wait() returns its status once answered.
struct PendingReport {
  grpc::ClientContext context;
  v1::ReportRequest request;
  v1::ReportResponse response;
  grpc::Status status;
  absl::Notification done;

  bool WaitFor(absl::Duration timeout) {
    return done.WaitForNotificationWithTimeout(timeout);
  }
};

// What a RawCall got back: the messages the server wrote, then its status.
struct RawCallResult {
  std::vector<std::string> messages;
  grpc::Status status;
};

// Calls `method` (e.g. "/gradnorm.v1.Coordinator/Report") with `requests` as
// raw bytes, whatever the method's kind (a unary or server-streaming method
// is one message each way on the wire), half-closes, and collects every
// message the server writes until it finishes. Driven on the caller's thread
// through a completion queue (a callback client costs a thread hop per
// operation, which the fuzzer feels).
inline RawCallResult RawCall(const std::shared_ptr<grpc::Channel>& channel,
                             const std::string& method,
                             std::vector<std::string> requests,
                             const std::string& token = "",
                             absl::Duration timeout = absl::Seconds(20)) {
  RawCallResult result;
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::CompletionQueue queue;
  auto await = [&queue]() {
    void* tag = nullptr;
    bool ok = false;
    if (!queue.Next(&tag, &ok)) return false;
    return ok;
  };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &queue);
  call->StartCall(nullptr);
  if (await()) {
    bool writing = true;
    for (const std::string& request : requests) {
      grpc::Slice slice(request);
      grpc::ByteBuffer out(&slice, 1);
      call->Write(out, nullptr);
      if (!await()) {
        writing = false;  // The server finished the call already.
        break;
      }
    }
    if (writing) {
      call->WritesDone(nullptr);
      await();
    }
    grpc::ByteBuffer in;
    while (true) {
      call->Read(&in, nullptr);
      if (!await()) break;
      std::vector<grpc::Slice> slices;
      std::string message;
      if (in.Dump(&slices).ok()) {
        for (const grpc::Slice& slice : slices) {
          message.append(reinterpret_cast<const char*>(slice.begin()),
                         slice.size());
        }
      }
      result.messages.push_back(std::move(message));
    }
  }
  call->Finish(&result.status, nullptr);
  await();
  queue.Shutdown();
  void* tag;
  bool ok;
  while (queue.Next(&tag, &ok)) {
  }
  return result;
}

class TestClient {
 public:
  explicit TestClient(std::shared_ptr<grpc::Channel> channel,
                      std::string token = "")
      : channel_(std::move(channel)),
        stub_(v1::Coordinator::NewStub(channel_)),
        health_(grpc::health::v1::Health::NewStub(channel_)),
        token_(std::move(token)) {}

  void Prepare(grpc::ClientContext* context,
               absl::Duration timeout = absl::Seconds(20)) {
    if (!token_.empty())
      context->AddMetadata("authorization", "Bearer " + token_);
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }

  grpc::Status RegisterRun(const std::string& run_id,
                           const v1::RunConfig& config,
                           v1::RegisterRunResponse* response = nullptr) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::RegisterRunRequest request;
    request.set_run_id(run_id);
    *request.mutable_config() = config;
    v1::RegisterRunResponse ignored;
    return stub_->RegisterRun(&context, request,
                              response ? response : &ignored);
  }

  grpc::Status Report(const std::string& run_id, uint64_t step,
                      uint32_t participant, double partial,
                      v1::RoundResult* result = nullptr,
                      absl::Duration timeout = absl::Seconds(20)) {
    grpc::ClientContext context;
    Prepare(&context, timeout);
    context.set_wait_for_ready(wait_for_ready_);
    v1::ReportRequest request;
    request.set_run_id(run_id);
    request.set_step(step);
    request.set_participant(participant);
    request.set_partial(partial);
    v1::ReportResponse response;
    grpc::Status status = stub_->Report(&context, request, &response);
    if (result != nullptr) *result = response.result();
    return status;
  }

  // Starts a Report and returns at once.
  std::unique_ptr<PendingReport> StartReport(
      const std::string& run_id, uint64_t step, uint32_t participant,
      double partial, absl::Duration timeout = absl::Seconds(20)) {
    auto pending = std::make_unique<PendingReport>();
    Prepare(&pending->context, timeout);
    pending->request.set_run_id(run_id);
    pending->request.set_step(step);
    pending->request.set_participant(participant);
    pending->request.set_partial(partial);
    PendingReport* raw = pending.get();
    stub_->async()->Report(&raw->context, &raw->request, &raw->response,
                           [raw](grpc::Status status) {
                             raw->status = std::move(status);
                             raw->done.Notify();
                           });
    return pending;
  }

  grpc::Status GetRun(const std::string& run_id, v1::RunInfo* run = nullptr) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::GetRunRequest request;
    request.set_run_id(run_id);
    v1::GetRunResponse response;
    grpc::Status status = stub_->GetRun(&context, request, &response);
    if (run != nullptr) *run = response.run();
    return status;
  }

  // Report waits (within its deadline) for a channel that is connecting,
  // e.g. to a restarted coordinator, instead of failing fast: with gRPC 1.51
  // a stream of fail-fast calls on such a channel kept failing for about 5 s
  // after the server was back.
  void set_wait_for_ready(bool wait) { wait_for_ready_ = wait; }

  grpc::Status FinishRun(const std::string& run_id,
                         v1::FinishRunResponse* response = nullptr) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::FinishRunRequest request;
    request.set_run_id(run_id);
    v1::FinishRunResponse ignored;
    return stub_->FinishRun(&context, request, response ? response : &ignored);
  }

  grpc::Status DeleteRun(const std::string& run_id,
                         v1::DeleteRunResponse* response = nullptr) {
    grpc::ClientContext context;
    Prepare(&context);
    v1::DeleteRunRequest request;
    request.set_run_id(run_id);
    v1::DeleteRunResponse ignored;
    return stub_->DeleteRun(&context, request, response ? response : &ignored);
  }

  grpc::Status ListRuns(v1::ListRunsResponse* response) {
    grpc::ClientContext context;
    Prepare(&context);
    return stub_->ListRuns(&context, v1::ListRunsRequest(), response);
  }

  grpc::Status GetHistory(const v1::GetHistoryRequest& request,
                          v1::GetHistoryResponse* response) {
    grpc::ClientContext context;
    Prepare(&context);
    return stub_->GetHistory(&context, request, response);
  }

  grpc::Status GetSummary(const v1::GetSummaryRequest& request,
                          v1::GetSummaryResponse* response) {
    grpc::ClientContext context;
    Prepare(&context);
    return stub_->GetSummary(&context, request, response);
  }

  // grpc.health.v1 Check of `service`; the status name ("SERVING", ...) or the
  // RPC's error as "ERROR <code>".
  std::string Health(const std::string& service = "") {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::health::v1::HealthCheckRequest request;
    request.set_service(service);
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = health_->Check(&context, request, &response);
    if (!status.ok()) return "ERROR " + std::to_string(status.error_code());
    return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
        response.status());
  }

  v1::Coordinator::Stub* stub() { return stub_.get(); }

 private:
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  bool wait_for_ready_ = false;
  std::string token_;
};

}  // namespace testing
}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_COORDINATOR_TEST_UTIL_H_
