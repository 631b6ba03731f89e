// Coordinator round latency and throughput over real gRPC (loopback), each
// reported as a ratio to a bare echo service (echo_service.h: same messages,
// same transport and callback API, no aggregation, no store) measured in the
// same run.
//
//   bazel run //server/benchmark:coordinator_benchmark
//
// BM_CoordinatorRound/N: N participants, each on its own channel, report one
// step concurrently; a round ends when all N answers are in. Each iteration
// runs one echo round then one coordinator round, so both see the same machine;
// x_echo = the coordinator's mean round time / the echo's (targets: N=1 <= 1.3,
// N=32 <= 1.5).
// The coordinator runs as deployed by default: SQLite with synchronous=NORMAL
// (a round is answered once it would survive a crash or kill of the process).
// BM_CoordinatorRoundSyncFull and BM_CoordinatorRoundMemoryStore bracket the
// cost: SQLite with an fsync per commit (survives power loss), and no store.
// BM_CoordinatorStreamRound/N: the same over open ReportStreams (what
// CoordinatorClient uses), against the echo's ReportStream.
// BM_CoordinatorStreamRoundExact/N: exact partials against doubles (x_double).
// BM_CoordinatorRoundPostgres/N: the PostgreSQL store (a real PostgreSQL this
// benchmark starts, on a Unix socket) against the SQLite store, a round of
// each per iteration; x_sqlite = the PostgreSQL round's mean / SQLite's
// (targets: N=1 <= 3, N=32 <= 2).
// BM_CoordinatorRoundViaReplica/N: the cost of a replica (replica_server.h)
// forwarding every report to the coordinator holding the database: rounds
// through a replica port against rounds sent to the coordinator directly,
// one of each per iteration (x_direct).
// BM_CoordinatorThroughput: 32 clients (4 runs x 8 participants), each keeping
// kWindow reports in flight, SQLite store with its durability on (a report is
// answered only after its round committed), alternating with the same burst
// against echo. x_echo = coordinator reports/s / echo reports/s (target >=
// 0.7).
#include <stdlib.h>

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "benchmark/benchmark.h"
#include "common/exact_sum.h"
#include "grpcpp/grpcpp.h"
#include "server/benchmark/echo_service.h"
#include "server/rpc/coordinator_server.h"
#include "server/rpc/replica_server.h"
#include "server/store/leader_directory.h"
#include "server/store/local_postgres.h"

namespace gradnorm {
namespace server {
namespace {

constexpr int kThroughputRuns = 4;
constexpr int kThroughputParticipants = 8;
constexpr int kWindow = 4;
constexpr int kReportsPerClientPerIteration = 64;

// Where the coordinator keeps its records: SQLite with synchronous=NORMAL (the
// default: a round is answered once it would survive a crash of the process),
// SQLite with synchronous=FULL (survives power loss), or memory (no
// durability: the service's and Aggregator's own cost).
enum Backend {
  kSqliteFull = 0,
  kSqliteNormal = 1,
  kMemory = 2,
  kPostgres = 3,  // started on first use
  kBackends = 4
};

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  // A subchannel (TCP connection) of its own, as separate jobs would have.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

class Fixture {
 public:
  static Fixture& Get() {
    static Fixture* fixture = new Fixture();
    return *fixture;
  }

  std::vector<std::unique_ptr<v1::Coordinator::Stub>>& EchoStubs(int n) {
    return Stubs(&echo_stubs_, echo_address_, n);
  }
  std::vector<std::unique_ptr<v1::Coordinator::Stub>>& CoordinatorStubs(
      int n, Backend backend = kSqliteNormal) {
    if (coordinators_[backend] == nullptr) StartPostgres();
    return Stubs(&coordinator_stubs_[backend],
                 coordinators_[backend]->address(), n);
  }

  void RegisterRun(const std::string& run_id, int participants,
                   Backend backend = kSqliteNormal) {
    v1::RegisterRunRequest request;
    request.set_run_id(run_id);
    request.mutable_config()->set_norm_type(2);
    request.mutable_config()->set_max_norm(1e12);
    request.mutable_config()->set_participants(participants);
    // Doubles and exact partials both (StreamRoundExact compares them).
    request.mutable_config()->set_inexact(true);
    v1::RegisterRunResponse response;
    grpc::ClientContext context;
    grpc::Status status = CoordinatorStubs(1, backend)[0]->RegisterRun(
        &context, request, &response);
    if (!status.ok()) {
      std::fprintf(stderr, "RegisterRun failed: %s\n",
                   status.error_message().c_str());
      std::abort();
    }
  }

  // Stubs of a replica port forwarding to the SQLite (NORMAL) coordinator.
  std::vector<std::unique_ptr<v1::Coordinator::Stub>>& ReplicaStubs(int n) {
    if (replica_ == nullptr) {
      directory_.Set(coordinators_[kSqliteNormal]->address());
      ReplicaServerOptions options;
      options.listen = "127.0.0.1:0";
      options.directory = &directory_;
      auto replica = ReplicaServer::Start(options);
      if (!replica.ok()) {
        std::fprintf(stderr, "%s\n", replica.status().ToString().c_str());
        std::abort();
      }
      replica_ = *std::move(replica);
    }
    return Stubs(&replica_stubs_, replica_->address(), n);
  }

  uint64_t NextSteps(const std::string& key, uint64_t count) {
    uint64_t& next = next_step_[key];
    uint64_t first = next;
    next += count;
    return first;
  }

 private:
  Fixture() {
    char dir_template[] = "/tmp/gradnorm_benchmark_XXXXXX";
    const char* dir = mkdtemp(dir_template);
    grpc::ServerBuilder builder;
    int echo_port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &echo_port);
    builder.RegisterService(&echo_);
    echo_server_ = builder.BuildAndStart();
    echo_address_ = absl::StrCat("127.0.0.1:", echo_port);

    CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    for (Backend backend : {kSqliteFull, kSqliteNormal, kMemory}) {
      options.store =
          backend == kMemory ? StoreKind::kMemory : StoreKind::kSqlite;
      options.db_path = absl::StrCat(dir, "/benchmark_", backend, ".db");
      options.sqlite_synchronous_full = backend == kSqliteFull;
      auto coordinator = CoordinatorServer::Create(options);
      if (!coordinator.ok()) {
        std::fprintf(stderr, "%s\n", coordinator.status().ToString().c_str());
        std::abort();
      }
      coordinators_[backend] = *std::move(coordinator);
    }
    std::printf("SQLite stores in %s\n", dir);
  }

  void StartPostgres() {
    absl::StatusOr<std::unique_ptr<LocalPostgres>> pg = LocalPostgres::Start();
    absl::StatusOr<std::string> dsn =
        pg.ok() ? (*pg)->CreateDatabase("benchmark") : pg.status();
    if (!dsn.ok()) {
      std::fprintf(stderr, "%s\n", dsn.status().ToString().c_str());
      std::abort();
    }
    postgres_ = *std::move(pg);
    CoordinatorServerOptions options;
    options.listen = "127.0.0.1:0";
    options.store = StoreKind::kPostgres;
    options.postgres_dsn = *dsn;
    auto coordinator = CoordinatorServer::Create(options);
    if (!coordinator.ok()) {
      std::fprintf(stderr, "%s\n", coordinator.status().ToString().c_str());
      std::abort();
    }
    coordinators_[kPostgres] = *std::move(coordinator);
  }

  std::vector<std::unique_ptr<v1::Coordinator::Stub>>& Stubs(
      std::vector<std::unique_ptr<v1::Coordinator::Stub>>* stubs,
      const std::string& target, int n) {
    while (static_cast<int>(stubs->size()) < n) {
      stubs->push_back(v1::Coordinator::NewStub(NewChannel(target)));
    }
    return *stubs;
  }

  EchoService echo_;
  std::unique_ptr<LocalPostgres> postgres_;
  std::unique_ptr<grpc::Server> echo_server_;
  std::string echo_address_;
  std::unique_ptr<CoordinatorServer> coordinators_[kBackends];
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> echo_stubs_;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>>
      coordinator_stubs_[kBackends];
  MemoryLeaderDirectory directory_;
  std::unique_ptr<ReplicaServer> replica_;
  std::vector<std::unique_ptr<v1::Coordinator::Stub>> replica_stubs_;
  std::map<std::string, uint64_t> next_step_;
};

// One Report in flight.
struct Call {
  grpc::ClientContext context;
  v1::ReportRequest request;
  v1::ReportResponse response;
};

void StartReport(v1::Coordinator::Stub* stub, const std::string& run_id,
                 uint64_t step, uint32_t participant,
                 std::function<void(grpc::Status)> done) {
  auto* call = new Call();
  call->request.set_run_id(run_id);
  call->request.set_step(step);
  call->request.set_participant(participant);
  call->request.set_partial(1.0 + participant);
  stub->async()->Report(&call->context, &call->request, &call->response,
                        [call, done = std::move(done)](grpc::Status status) {
                          delete call;
                          if (!status.ok()) {
                            std::fprintf(stderr, "Report failed: %s\n",
                                         status.error_message().c_str());
                            std::abort();
                          }
                          done(status);
                        });
}

// N concurrent reports of one step, one per stub; returns when all answered.
void Round(std::vector<std::unique_ptr<v1::Coordinator::Stub>>& stubs, int n,
           const std::string& run_id, uint64_t step) {
  absl::BlockingCounter answered(n);
  for (int p = 0; p < n; ++p) {
    StartReport(stubs[p].get(), run_id, step, p,
                [&answered](grpc::Status) { answered.DecrementCount(); });
  }
  answered.Wait();
}

// One participant's open ReportStream (as CoordinatorClient keeps one):
// Send writes one report and runs `done` once it is answered and written.
class StreamParticipant final
    : public grpc::ClientBidiReactor<v1::ReportStreamRequest,
                                     v1::ReportStreamResponse> {
 public:
  explicit StreamParticipant(v1::Coordinator::Stub* stub) {
    stub->async()->ReportStream(&context_, this);
    StartCall();
  }

  // Sends `exact` (ExactSum bytes) and its rounding instead of the default
  // double partial.
  void UseExactPartial(std::string exact, double partial) {
    exact_ = std::move(exact);
    partial_ = partial;
  }

  void Send(const std::string& run_id, uint64_t step, uint32_t participant,
            std::function<void()> done) {
    done_ = std::move(done);
    pending_ = 2;  // The read's and the write's reactions.
    request_.mutable_report()->set_run_id(run_id);
    request_.mutable_report()->set_step(step);
    request_.mutable_report()->set_participant(participant);
    request_.mutable_report()->set_partial(exact_.empty() ? 1.0 + participant
                                                          : partial_);
    request_.mutable_report()->set_exact_partial(exact_);
    StartRead(&response_);
    StartWrite(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok || !response_.has_result()) {
      std::fprintf(stderr, "ReportStream answered no result: %s\n",
                   response_.ShortDebugString().c_str());
      std::abort();
    }
    Reacted();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      std::fprintf(stderr, "ReportStream write failed\n");
      std::abort();
    }
    Reacted();
  }
  void OnDone(const grpc::Status& /*status*/) override {}

 private:
  void Reacted() {
    if (--pending_ == 0) done_();
  }

  grpc::ClientContext context_;
  v1::ReportStreamRequest request_;
  v1::ReportStreamResponse response_;
  std::string exact_;
  double partial_ = 0.0;
  std::function<void()> done_;
  std::atomic<int> pending_{0};
};

// N concurrent reports of one step, one per open stream.
void StreamRound(std::vector<std::unique_ptr<StreamParticipant>>& streams,
                 int n, const std::string& run_id, uint64_t step) {
  absl::BlockingCounter answered(n);
  for (int p = 0; p < n; ++p) {
    streams[p]->Send(run_id, step, p,
                     [&answered] { answered.DecrementCount(); });
  }
  answered.Wait();
}

// One round of `step` among the benchmark's participants.
using RoundFn = std::function<void(uint64_t step)>;

// A round of `reference` then one of `measured` per iteration, after one of
// each to warm the channels, so both see the same machine (this VM's speed
// drifts by tens of percent over seconds). Steps come from `fixture` per run.
struct PairedRounds {
  absl::Duration reference;
  absl::Duration measured;
  int64_t rounds = 0;
};
// The pair's counters: `measured_counter` (the measured round, µs),
// <reference>_round_us and x_<reference> (measured / reference).
void SetPairedCounters(benchmark::State& state, const PairedRounds& t,
                       const std::string& measured_counter,
                       const std::string& reference) {
  state.counters[measured_counter] =
      absl::ToDoubleMicroseconds(t.measured) / t.rounds;
  state.counters[reference + "_round_us"] =
      absl::ToDoubleMicroseconds(t.reference) / t.rounds;
  state.counters["x_" + reference] =
      absl::FDivDuration(t.measured, t.reference);
}

PairedRounds AlternateRounds(benchmark::State& state, Fixture& fixture,
                             const std::string& reference_run,
                             const RoundFn& reference,
                             const std::string& measured_run,
                             const RoundFn& measured) {
  reference(fixture.NextSteps(reference_run, 1));
  measured(fixture.NextSteps(measured_run, 1));
  PairedRounds out;
  for (auto _ : state) {
    absl::Time start = absl::Now();
    reference(fixture.NextSteps(reference_run, 1));
    out.reference += absl::Now() - start;
    start = absl::Now();
    measured(fixture.NextSteps(measured_run, 1));
    out.measured += absl::Now() - start;
    ++out.rounds;
  }
  return out;
}

// Alternates one echo round and one coordinator round per iteration, so
// both see the same machine (this VM's speed drifts by tens of percent over
// seconds); counters: the coordinator's mean round, the echo's, and x_echo.
void MeasureRounds(benchmark::State& state, int n, Backend backend,
                   bool streams) {
  Fixture& fixture = Fixture::Get();
  const std::string echo_run = absl::StrCat("echo-n", n);
  const std::string run_id = absl::StrCat(
      "round-n", n, "-", static_cast<int>(backend), streams ? "-stream" : "");
  fixture.RegisterRun(run_id, n, backend);
  auto& echo_stubs = fixture.EchoStubs(n);
  auto& stubs = fixture.CoordinatorStubs(n, backend);
  std::vector<std::unique_ptr<StreamParticipant>> echo_streams,
      coordinator_streams;
  RoundFn echo_round, round;
  if (streams) {
    for (int p = 0; p < n; ++p) {
      echo_streams.push_back(
          std::make_unique<StreamParticipant>(echo_stubs[p].get()));
      coordinator_streams.push_back(
          std::make_unique<StreamParticipant>(stubs[p].get()));
    }
    echo_round = [&](uint64_t step) {
      StreamRound(echo_streams, n, echo_run, step);
    };
    round = [&](uint64_t step) {
      StreamRound(coordinator_streams, n, run_id, step);
    };
  } else {
    echo_round = [&](uint64_t step) { Round(echo_stubs, n, echo_run, step); };
    round = [&](uint64_t step) { Round(stubs, n, run_id, step); };
  }
  const PairedRounds t =
      AlternateRounds(state, fixture, echo_run, echo_round, run_id, round);
  state.SetItemsProcessed(t.rounds * n);
  SetPairedCounters(state, t, "round_us", "echo");
}

// One SQLite round and one PostgreSQL round per iteration (x_sqlite).
void BM_CoordinatorRoundPostgres(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Fixture& fixture = Fixture::Get();
  const std::string sqlite_run = absl::StrCat("vs-pg-sqlite-n", n);
  const std::string pg_run = absl::StrCat("vs-pg-postgres-n", n);
  fixture.RegisterRun(sqlite_run, n, kSqliteNormal);
  fixture.RegisterRun(pg_run, n, kPostgres);
  auto& sqlite_stubs = fixture.CoordinatorStubs(n, kSqliteNormal);
  auto& pg_stubs = fixture.CoordinatorStubs(n, kPostgres);
  const PairedRounds t = AlternateRounds(
      state, fixture, sqlite_run,
      [&](uint64_t step) { Round(sqlite_stubs, n, sqlite_run, step); }, pg_run,
      [&](uint64_t step) { Round(pg_stubs, n, pg_run, step); });
  state.SetItemsProcessed(t.rounds * n);
  SetPairedCounters(state, t, "round_us", "sqlite");
}

// One round through a replica and one sent directly per iteration, both to
// the same coordinator (x_direct).
void BM_CoordinatorRoundViaReplica(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Fixture& fixture = Fixture::Get();
  const std::string direct_run = absl::StrCat("vs-replica-direct-n", n);
  const std::string replica_run = absl::StrCat("vs-replica-forwarded-n", n);
  fixture.RegisterRun(direct_run, n, kSqliteNormal);
  fixture.RegisterRun(replica_run, n, kSqliteNormal);
  auto& direct_stubs = fixture.CoordinatorStubs(n, kSqliteNormal);
  auto& replica_stubs = fixture.ReplicaStubs(n);
  const PairedRounds t = AlternateRounds(
      state, fixture, direct_run,
      [&](uint64_t step) { Round(direct_stubs, n, direct_run, step); },
      replica_run,
      [&](uint64_t step) { Round(replica_stubs, n, replica_run, step); });
  state.SetItemsProcessed(t.rounds * n);
  SetPairedCounters(state, t, "round_us", "direct");
}

void BM_CoordinatorRound(benchmark::State& state) {
  MeasureRounds(state, static_cast<int>(state.range(0)), kSqliteNormal, false);
}
void BM_CoordinatorRoundSyncFull(benchmark::State& state) {
  MeasureRounds(state, static_cast<int>(state.range(0)), kSqliteFull, false);
}
void BM_CoordinatorRoundMemoryStore(benchmark::State& state) {
  MeasureRounds(state, static_cast<int>(state.range(0)), kMemory, false);
}
// Reports on open ReportStreams (CoordinatorClient's path) against the
// echo's stream.
void BM_CoordinatorStreamRound(benchmark::State& state) {
  MeasureRounds(state, static_cast<int>(state.range(0)), kSqliteNormal, true);
}

// Exact partials against double ones: N participants on open streams, one
// run reporting doubles and one reporting exact partials (a job's sum of
// squares of 10^5 normal fp32 gradients each), a round of each per
// iteration; x_double = the exact round's mean time / the double round's
// (target <= 1.1 at N = 32).
void BM_CoordinatorStreamRoundExact(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  Fixture& fixture = Fixture::Get();
  const std::string double_run = absl::StrCat("double-n", n);
  const std::string exact_run = absl::StrCat("exact-n", n);
  fixture.RegisterRun(double_run, n, kSqliteNormal);
  fixture.RegisterRun(exact_run, n, kSqliteNormal);
  auto& stubs = fixture.CoordinatorStubs(n, kSqliteNormal);
  std::vector<std::unique_ptr<StreamParticipant>> doubles, exacts;
  std::mt19937 random(1);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  size_t exact_bytes = 0;
  for (int p = 0; p < n; ++p) {
    doubles.push_back(std::make_unique<StreamParticipant>(stubs[p].get()));
    exacts.push_back(std::make_unique<StreamParticipant>(stubs[p].get()));
    ExactSum sum;
    for (int i = 0; i < 100000; ++i) sum.AddSquare(normal(random));
    exact_bytes = sum.Encode().size();
    exacts.back()->UseExactPartial(sum.Encode(), sum.RoundToDouble());
  }
  const PairedRounds t = AlternateRounds(
      state, fixture, double_run,
      [&](uint64_t step) { StreamRound(doubles, n, double_run, step); },
      exact_run,
      [&](uint64_t step) { StreamRound(exacts, n, exact_run, step); });
  SetPairedCounters(state, t, "exact_round_us", "double");
  state.counters["exact_bytes"] = static_cast<double>(exact_bytes);
}

// Every client keeps kWindow reports in flight until it sent
// kReportsPerClientPerIteration; returns how long all took.
absl::Duration ThroughputBurst(bool echo) {
  Fixture& fixture = Fixture::Get();
  constexpr int kClients = kThroughputRuns * kThroughputParticipants;
  constexpr int kPerClient = kReportsPerClientPerIteration;
  auto& stubs =
      echo ? fixture.EchoStubs(kClients) : fixture.CoordinatorStubs(kClients);
  struct Client {
    v1::Coordinator::Stub* stub;
    std::string run_id;
    uint32_t participant;
    uint64_t first_step;
    std::atomic<int> sent{0};
  };
  std::vector<std::unique_ptr<Client>> clients;
  for (int r = 0; r < kThroughputRuns; ++r) {
    const std::string run_id = absl::StrCat(echo ? "echo-tput-" : "tput-", r);
    const uint64_t first = fixture.NextSteps(run_id, kPerClient);
    for (int p = 0; p < kThroughputParticipants; ++p) {
      auto client = std::make_unique<Client>();
      client->stub = stubs[r * kThroughputParticipants + p].get();
      client->run_id = run_id;
      client->participant = p;
      client->first_step = first;
      clients.push_back(std::move(client));
    }
  }
  absl::BlockingCounter answered(kClients * kPerClient);
  // Sends the client's next step, if any; each answer sends one more.
  std::function<void(Client*)> send_next = [&](Client* client) {
    const int index = client->sent.fetch_add(1);
    if (index >= kPerClient) return;
    StartReport(client->stub, client->run_id, client->first_step + index,
                client->participant, [&, client](grpc::Status) {
                  send_next(client);
                  answered.DecrementCount();
                });
  };
  const absl::Time start = absl::Now();
  for (auto& client : clients) {
    for (int w = 0; w < kWindow; ++w) send_next(client.get());
  }
  answered.Wait();
  return absl::Now() - start;
}

// Alternates an echo burst and a coordinator burst per iteration (see
// MeasureRounds); x_echo = coordinator reports/s / echo reports/s.
void BM_CoordinatorThroughput(benchmark::State& state) {
  Fixture& fixture = Fixture::Get();
  for (int r = 0; r < kThroughputRuns; ++r) {
    fixture.RegisterRun(absl::StrCat("tput-", r), kThroughputParticipants);
  }
  absl::Duration echo_total, total;
  int64_t reports = 0;
  for (auto _ : state) {
    echo_total += ThroughputBurst(/*echo=*/true);
    total += ThroughputBurst(/*echo=*/false);
    reports += kThroughputRuns * kThroughputParticipants *
               kReportsPerClientPerIteration;
  }
  state.SetItemsProcessed(reports);
  state.counters["reports_per_s"] = reports / absl::ToDoubleSeconds(total);
  state.counters["echo_reports_per_s"] =
      reports / absl::ToDoubleSeconds(echo_total);
  state.counters["x_echo"] = absl::FDivDuration(echo_total, total);
}

BENCHMARK(BM_CoordinatorRound)->Arg(1)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRoundSyncFull)->Arg(1)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CoordinatorRoundMemoryStore)->Arg(1)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CoordinatorRound)->Arg(8)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRound)->Arg(32)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRoundSyncFull)->Arg(32)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CoordinatorRoundMemoryStore)->Arg(32)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_CoordinatorRound)->Arg(128)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorStreamRound)->Arg(1)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorStreamRound)->Arg(32)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorStreamRoundExact)->Arg(32)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorThroughput)->UseRealTime()->MinTime(2.0);
BENCHMARK(BM_CoordinatorRoundPostgres)->Arg(1)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRoundPostgres)->Arg(32)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRoundViaReplica)->Arg(1)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_CoordinatorRoundViaReplica)->Arg(32)->UseRealTime()->MinTime(1.0);

}  // namespace
}  // namespace server
}  // namespace gradnorm

int main(int argc, char** argv) {
  // As //server:coordinator runs (server/main.cc).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
