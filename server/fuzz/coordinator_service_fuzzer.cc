// Fuzzes every rpc of the coordinator's service with arbitrary request bytes,
// through gRPC (an in-process channel) into CoordinatorService, the Aggregator
// and an in-memory store, as a client no one in this project wrote would.
//
// Input: the first byte picks the rpc (modulo their number), the rest is the
// request's bytes. Two runs exist from the start ("solo", 1 participant, and
// "pair", 2), so that valid reports reach rounds. The coordinator keeps what
// it is told (runs, finished runs, rounds) as a real one does until its
// retention deletes it, so the fuzzer starts a fresh one every
// kInputsPerCoordinator inputs: a long session would otherwise run out of
// memory on history alone. Besides crashes and
// sanitizer reports, a status code that coordinator.proto does not document
// for a request (UNKNOWN, INTERNAL, UNIMPLEMENTED, DATA_LOSS) is a finding.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/core/aggregator.h"
#include "server/core/clock.h"
#include "server/rpc/coordinator_service.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/rpc/metrics.h"
#include "server/store/memory_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

constexpr const char* kRpcs[] = {
    "RegisterRun", "Report",     "ReportStream", "ListRuns",  "GetRun",
    "GetHistory",  "GetSummary", "WatchRun",     "FinishRun", "DeleteRun"};
constexpr size_t kNumRpcs = sizeof(kRpcs) / sizeof(kRpcs[0]);
constexpr int kInputsPerCoordinator = 4096;

// One coordinator for the whole fuzzing session, never destroyed (libFuzzer
// exits without returning).
struct Coordinator {
  ~Coordinator() {
    server->Shutdown(std::chrono::system_clock::now());
    aggregator->Shutdown().IgnoreError();
  }

  Coordinator() {
    AggregatorOptions options;
    // Bounded, so that a long session does not grow without end.
    options.max_runs = 32;
    options.max_open_rounds_per_run = 8;
    options.max_participants = 16;
    options.expiry_interval = absl::Milliseconds(5);
    aggregator = *Aggregator::Create(options, &store, &clock);
    service = std::make_unique<CoordinatorService>(aggregator.get(), nullptr,
                                                   &metrics);
    grpc::ServerBuilder builder;
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    channel = server->InProcessChannel(grpc::ChannelArguments());
    for (auto [id, n] :
         {std::pair<const char*, uint32_t>{"solo", 1}, {"pair", 2}}) {
      v1::RegisterRunRequest run;
      run.set_run_id(id);
      run.mutable_config()->set_participants(n);
      run.mutable_config()->set_round_timeout_ms(20);
      // One run takes doubles too, the other exact partials only.
      run.mutable_config()->set_inexact(n == 1);
      if (!aggregator->RegisterRun(run).ok()) std::abort();
    }
  }

  RealClock clock;
  MemoryTelemetryStore store;
  NullMetrics metrics;
  std::unique_ptr<Aggregator> aggregator;
  std::unique_ptr<CoordinatorService> service;
  std::unique_ptr<grpc::Server> server;
  std::shared_ptr<grpc::Channel> channel;
};

bool Documented(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNIMPLEMENTED:
    case grpc::StatusCode::DATA_LOSS:
      return false;
    default:
      return true;
  }
}

}  // namespace
}  // namespace server
}  // namespace gradnorm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gradnorm::server;
  static std::unique_ptr<Coordinator> coordinator;
  static int inputs = 0;
  if (inputs++ % kInputsPerCoordinator == 0) {
    coordinator.reset();
    coordinator = std::make_unique<Coordinator>();
  }
  if (size == 0) return 0;
  const char* rpc = kRpcs[data[0] % kNumRpcs];
  std::string request(reinterpret_cast<const char*>(data + 1), size - 1);
  // A report that waits for a participant never coming, or a watch, ends at
  // this deadline.
  testing::RawCallResult result = testing::RawCall(
      coordinator->channel, std::string("/gradnorm.v1.Coordinator/") + rpc,
      {std::move(request)}, "", absl::Milliseconds(30));
  if (!Documented(result.status.error_code())) {
    std::cerr << rpc << " answered code " << result.status.error_code() << ": "
              << result.status.error_message() << "\n";
    std::abort();
  }
  return 0;
}
