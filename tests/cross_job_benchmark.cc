// Cross-job benchmark: what one step's global agreement costs when a run is
// split into N processes that share no communicator.
//
//   bazel run -c opt //tests:cross_job_benchmark -- --n=2,8,32 --steps=200
//
// For each N, in the same run and on the same machine:
//   (a) gloo:        N processes all-reduce one fp64 value with Gloo over
//                    loopback TCP, the peer a user would otherwise reach for;
//   (b) coordinator: N processes each Report one partial per step to one
//                    coordinator (SQLite durability on) and wait for the
//                    round's result.
// The same N worker processes do both, alternating blocks of --block steps of
// (a) and of (b), so both sides see the same processes and the same machine
// (this VM's speed drifts by tens of percent over seconds). Each timed block
// starts with one untimed step of its kind, which absorbs the skew the other
// kind left between the processes (a ring all-reduce releases its ranks up to
// one all-reduce apart; a round releases them together), so neither side is
// charged for the other's. Per-step times are
// taken on participant 0 after a warm-up of each; the median of several
// repetitions (fresh processes each) is reported. Prints a table and JSON with
// the ratio (b)/(a).
//
// The same binary is the worker: --worker runs one process.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "client/gloo_communicator.h"
#include "common/child_process.h"
#include "common/status_macros.h"
#include "tests/local_coordinator.h"

ABSL_FLAG(std::string, n, "2,8,32", "Comma-separated process counts.");
ABSL_FLAG(int, steps, 200, "Timed steps of each kind per repetition.");
ABSL_FLAG(int, block, 20, "Steps of one kind before switching to the other.");
ABSL_FLAG(int, warmup, 20, "Untimed steps before the timed ones.");
ABSL_FLAG(int, repetitions, 3,
          "Repetitions; the median per-step time is reported.");
ABSL_FLAG(std::string, json_out, "",
          "Also write the JSON report to this file.");
ABSL_FLAG(std::string, coordinator_store, "sqlite",
          "The coordinator's telemetry store: sqlite (durable, the default) or "
          "memory.");
ABSL_FLAG(std::string, work_dir, "",
          "Scratch directory (default: a fresh one).");
// Worker flags.
ABSL_FLAG(bool, worker, false, "Run as one worker process.");
ABSL_FLAG(int, rank, 0, "Worker: rank / participant.");
ABSL_FLAG(int, size, 1, "Worker: number of processes.");
ABSL_FLAG(std::string, store, "", "Worker: Gloo rendezvous directory.");
ABSL_FLAG(std::string, target, "", "Worker: coordinator host:port.");
ABSL_FLAG(std::string, run_id, "", "Worker: run id.");
ABSL_FLAG(uint64_t, first_step, 0, "Worker: first step number.");
ABSL_FLAG(std::string, result, "",
          "Worker: file for rank 0's seconds per step of each kind.");

namespace gradnorm {
namespace {

struct PerStep {
  double gloo_seconds = 0;
  double coordinator_seconds = 0;
};

absl::Status WriteResult(const PerStep& per_step) {
  const std::string path = absl::GetFlag(FLAGS_result);
  if (absl::GetFlag(FLAGS_rank) != 0 || path.empty()) return absl::OkStatus();
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr)
    return absl::InternalError(absl::StrCat("cannot write ", path));
  std::fprintf(f, "%.9g %.9g\n", per_step.gloo_seconds,
               per_step.coordinator_seconds);
  std::fclose(f);
  return absl::OkStatus();
}

// One worker process: a Gloo group of --size and a coordinator participant.
absl::Status Worker() {
  GlooCommunicatorOptions gloo_options;
  gloo_options.store_path = absl::GetFlag(FLAGS_store);
  gloo_options.group_name = "bench";
  gloo_options.rank = absl::GetFlag(FLAGS_rank);
  gloo_options.size = absl::GetFlag(FLAGS_size);
  gloo_options.timeout = absl::Seconds(60);
  ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> comm,
                   GlooCommunicator::Create(gloo_options));
  CoordinatorClientOptions client_options;
  client_options.target = absl::GetFlag(FLAGS_target);
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                   CoordinatorClient::Create(client_options));
  const int rank = gloo_options.rank;
  const double n = gloo_options.size;

  auto all_reduce = [&]() -> absl::Status {
    double value[1] = {1.0 + rank};
    RETURN_IF_ERROR(comm->AllReduce(absl::MakeSpan(value), ReduceOp::kSum));
    if (value[0] != n * (n + 1) / 2) {
      return absl::InternalError(absl::StrCat("all-reduce gave ", value[0],
                                              ", expected ", n * (n + 1) / 2));
    }
    return absl::OkStatus();
  };
  uint64_t step = absl::GetFlag(FLAGS_first_step);
  auto report = [&]() -> absl::Status {
    v1::ReportRequest request;
    request.set_run_id(absl::GetFlag(FLAGS_run_id));
    request.set_step(step++);
    request.set_participant(rank);
    request.set_partial(1.0 + rank);
    ASSIGN_OR_RETURN(v1::RoundResult result,
                     client->Report(request, absl::Now() + absl::Seconds(60)));
    // The sum of squares' root: sqrt(sum (1 + r)) over ranks r.
    if (std::abs(result.total_norm() - std::sqrt(n * (n + 1) / 2)) > 1e-9) {
      return absl::InternalError(absl::StrCat(
          "round ", request.step(), " gave total ", result.total_norm(),
          ", expected ", std::sqrt(n * (n + 1) / 2)));
    }
    return absl::OkStatus();
  };
  // Runs `count` steps of `one` and returns how long they took.
  auto timed = [](int count, const std::function<absl::Status()>& one)
      -> absl::StatusOr<absl::Duration> {
    const absl::Time start = absl::Now();
    for (int i = 0; i < count; ++i) RETURN_IF_ERROR(one());
    return absl::Now() - start;
  };

  const int warmup = absl::GetFlag(FLAGS_warmup);
  RETURN_IF_ERROR(timed(warmup, all_reduce).status());
  RETURN_IF_ERROR(timed(warmup, report).status());
  const int steps = absl::GetFlag(FLAGS_steps);
  const int block = std::max(1, absl::GetFlag(FLAGS_block));
  absl::Duration gloo_total, coordinator_total;
  for (int done = 0; done < steps; done += block) {
    const int count = std::min(block, steps - done);
    RETURN_IF_ERROR(all_reduce());
    ASSIGN_OR_RETURN(absl::Duration g, timed(count, all_reduce));
    RETURN_IF_ERROR(report());
    ASSIGN_OR_RETURN(absl::Duration c, timed(count, report));
    gloo_total += g;
    coordinator_total += c;
  }
  return WriteResult({absl::ToDoubleSeconds(gloo_total) / steps,
                      absl::ToDoubleSeconds(coordinator_total) / steps});
}

// Runs `size` workers and returns rank 0's seconds per step of each kind.
absl::StatusOr<PerStep> RunWorkers(const std::string& self, int size,
                                   const std::vector<std::string>& extra,
                                   const std::string& dir) {
  const std::string result = absl::StrCat(dir, "/workers-", size, ".result");
  std::remove(result.c_str());
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int rank = 0; rank < size; ++rank) {
    std::vector<std::string> argv = {
        self,
        "--worker",
        absl::StrCat("--rank=", rank),
        absl::StrCat("--size=", size),
        absl::StrCat("--steps=", absl::GetFlag(FLAGS_steps)),
        absl::StrCat("--block=", absl::GetFlag(FLAGS_block)),
        absl::StrCat("--warmup=", absl::GetFlag(FLAGS_warmup)),
        "--result=" + result};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ASSIGN_OR_RETURN(
        std::unique_ptr<ChildProcess> worker,
        ChildProcess::Start(
            argv, absl::StrCat(dir, "/worker-", size, "-", rank, ".log")));
    workers.push_back(std::move(worker));
  }
  const absl::Time deadline = absl::Now() + absl::Minutes(5);
  for (auto& worker : workers) {
    ASSIGN_OR_RETURN(int code, worker->Wait(deadline));
    if (code != 0) {
      return absl::InternalError(
          absl::StrCat("worker exited ", code, ":\n",
                       LastLinesOf(worker->output_path(), 5)));
    }
  }
  PerStep per_step;
  const std::vector<std::string> fields = absl::StrSplit(
      ReadWholeFile(result), absl::ByAnyChar(" \n"), absl::SkipEmpty());
  if (fields.size() != 2 ||
      !absl::SimpleAtod(fields[0], &per_step.gloo_seconds) ||
      !absl::SimpleAtod(fields[1], &per_step.coordinator_seconds)) {
    return absl::DataLossError(
        absl::StrCat("no result in ", result, ": expected two numbers"));
  }
  return per_step;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

absl::Status Drive(const std::string& self) {
  std::vector<int> sizes;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_n), ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 2) {
      return absl::InvalidArgumentError(
          absl::StrCat("--n: '", part, "' is not an integer >= 2"));
    }
    sizes.push_back(n);
  }
  std::string dir = absl::GetFlag(FLAGS_work_dir);
  if (dir.empty()) {
    ASSIGN_OR_RETURN(dir, MakeScratchDir("gradnorm-crossjob"));
  }

  // One coordinator for every N, as a deployment would have.
  ASSIGN_OR_RETURN(LocalCoordinator local,
                   StartLocalCoordinator(
                       BazelBinOfThisBinary() + "/server/coordinator", dir,
                       {"--store=" + absl::GetFlag(FLAGS_coordinator_store)}));
  std::unique_ptr<ChildProcess>& coordinator = local.process;
  const std::string& target = local.target;
  CoordinatorClientOptions client_options;
  client_options.target = target;
  ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorClient> client,
                   CoordinatorClient::Create(client_options));

  struct Row {
    int n;
    double gloo_s;
    double coordinator_s;
  };
  std::vector<Row> rows;
  const int reps = std::max(1, absl::GetFlag(FLAGS_repetitions));
  const uint64_t steps_per_rep =
      absl::GetFlag(FLAGS_steps) + absl::GetFlag(FLAGS_warmup);
  for (int n : sizes) {
    const std::string run_id = absl::StrCat("crossjob-", n, "-", getpid());
    v1::RunConfig config;
    config.set_norm_type(2.0);
    config.set_max_norm(1.0);
    config.set_participants(n);
    config.set_round_timeout_ms(60000);
    config.set_inexact(true);  // its ranks report doubles
    RETURN_IF_ERROR(
        client->RegisterRun(run_id, config, absl::Now() + absl::Seconds(10))
            .status());
    std::vector<double> gloo, coord;
    for (int rep = 0; rep < reps; ++rep) {
      const std::string store = absl::StrCat(dir, "/gloo-", n, "-", rep);
      mkdir(store.c_str(), 0755);
      ASSIGN_OR_RETURN(
          PerStep per_step,
          RunWorkers(
              self, n,
              {"--store=" + store, "--target=" + target, "--run_id=" + run_id,
               absl::StrCat("--first_step=", rep * steps_per_rep)},
              dir));
      gloo.push_back(per_step.gloo_seconds);
      coord.push_back(per_step.coordinator_seconds);
    }
    rows.push_back({n, Median(gloo), Median(coord)});
  }
  coordinator->Signal(SIGTERM);
  (void)coordinator->Wait(absl::Now() + absl::Seconds(20));

  std::printf("%6s  %18s  %22s  %16s\n", "N", "gloo allreduce/step",
              "coordinator round/step", "ratio (b)/(a)");
  std::vector<std::string> json_rows;
  for (const Row& r : rows) {
    std::printf("%6d  %15.1f us  %19.1f us  %16.3f\n", r.n, r.gloo_s * 1e6,
                r.coordinator_s * 1e6, r.coordinator_s / r.gloo_s);
    json_rows.push_back(
        absl::StrFormat("{\"n\": %d, \"gloo_allreduce_us\": %.3f, "
                        "\"coordinator_round_us\": %.3f, "
                        "\"ratio\": %.4f}",
                        r.n, r.gloo_s * 1e6, r.coordinator_s * 1e6,
                        r.coordinator_s / r.gloo_s));
  }
  const std::string json = absl::StrCat(
      "{\"benchmark\": \"cross_job\", \"steps\": ", absl::GetFlag(FLAGS_steps),
      ", \"repetitions\": ", reps, ", \"store\": \"",
      absl::GetFlag(FLAGS_coordinator_store), "\", \"results\": [",
      absl::StrJoin(json_rows, ", "), "]}");
  std::printf("%s\n", json.c_str());
  const std::string json_out = absl::GetFlag(FLAGS_json_out);
  if (!json_out.empty()) {
    FILE* f = std::fopen(json_out.c_str(), "w");
    if (f == nullptr)
      return absl::InternalError(absl::StrCat("cannot write ", json_out));
    std::fprintf(f, "%s\n", json.c_str());
    std::fclose(f);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // Workers run as a trainer would in production, with Abseil's debug-build
  // deadlock detector off (Debian's Abseil has it on): it tracks every Mutex,
  // gRPC's included, and was a fifth of a worker's CPU per report.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  self[len > 0 ? len : 0] = '\0';
  const absl::Status status =
      absl::GetFlag(FLAGS_worker) ? gradnorm::Worker() : gradnorm::Drive(self);
  if (!status.ok()) {
    std::fprintf(stderr, "cross_job_benchmark: %s\n",
                 status.ToString().c_str());
    return 1;
  }
  return 0;
}
