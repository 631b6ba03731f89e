// Reports per second through coordinator replicas, against one coordinator,
// on this machine: `--runs` runs of `--jobs` jobs each (one round_load
// process per run, every job its own client and ReportStream) report as fast
// as they are answered for `--seconds`, against
//   - one coordinator on SQLite,
//   - one coordinator on PostgreSQL,
//   - three --replica coordinators on PostgreSQL, run r's jobs connecting to
//     replica r % 3 (so two thirds of the reports are forwarded),
// each setup twice, alternating. PostgreSQL (fsync off, as in the tests) and
// the load share the machine's cores with the coordinators. Prints one line
// per measurement and the medians.
//
//   bazel build -c opt //tests:replicas_benchmark //tests:round_load
//       //server:coordinator
//   bazel-bin/tests/replicas_benchmark --runs=4 --jobs=8 --seconds=10
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/child_process.h"
#include "server/store/local_postgres.h"
#include "tests/demo/coordinator_replicas.h"
#include "tests/local_coordinator.h"

ABSL_FLAG(int, runs, 4, "Runs reporting at once (one load process each).");
ABSL_FLAG(int, jobs, 8, "Jobs per run.");
ABSL_FLAG(int, seconds, 10, "How long each measurement reports.");
ABSL_FLAG(int, repeats, 2, "Measurements of each setup, alternating.");

namespace gradnorm {
namespace {

// "rounds_per_second":X in round_load's JSON line; -1 when absent.
double RoundsPerSecond(const std::string& output) {
  const std::string key = "\"rounds_per_second\":";
  const size_t at = output.find(key);
  if (at == std::string::npos) return -1;
  double value = -1;
  const size_t end = output.find(',', at);
  if (!absl::SimpleAtod(output.substr(at + key.size(), end - at - key.size()),
                        &value)) {
    return -1;
  }
  return value;
}

// Runs the load, run r against target_of(r); reports per second in all.
absl::StatusOr<double> Load(const std::string& label,
                            const std::function<std::string(int)>& target_of,
                            const std::string& dir) {
  const int runs = absl::GetFlag(FLAGS_runs);
  const int jobs = absl::GetFlag(FLAGS_jobs);
  static int measurement = 0;
  ++measurement;
  std::vector<std::unique_ptr<ChildProcess>> loads;
  std::vector<std::string> outputs;
  for (int r = 0; r < runs; ++r) {
    outputs.push_back(absl::StrCat(dir, "/load", measurement, "_", r, ".out"));
    absl::StatusOr<std::unique_ptr<ChildProcess>> load = ChildProcess::Start(
        {BazelBinOfThisBinary() + "/tests/round_load",
         "--target=" + target_of(r),
         absl::StrCat("--run_id=", label, measurement, "_", r),
         absl::StrCat("--jobs=", jobs),
         absl::StrCat("--seconds=", absl::GetFlag(FLAGS_seconds))},
        outputs.back());
    if (!load.ok()) return load.status();
    loads.push_back(*std::move(load));
  }
  double rounds_per_second = 0;
  for (int r = 0; r < runs; ++r) {
    absl::StatusOr<int> code = loads[r]->Wait(absl::Now() + absl::Minutes(2));
    const std::string output = ReadWholeFile(outputs[r]);
    const double value = RoundsPerSecond(output);
    if (!code.ok() || *code != 0 || value < 0) {
      return absl::InternalError(
          absl::StrCat(label, " load ", r, " failed: ", output));
    }
    rounds_per_second += value;
  }
  return rounds_per_second * jobs;
}

int Main() {
  absl::StatusOr<std::string> dir = MakeScratchDir("replicas_benchmark");
  if (!dir.ok())
    return std::fprintf(stderr, "%s\n", dir.status().ToString().c_str()), 1;
  const std::string binary = BazelBinOfThisBinary() + "/server/coordinator";
  absl::StatusOr<std::unique_ptr<server::LocalPostgres>> pg =
      server::LocalPostgres::Start();
  if (!pg.ok())
    return std::fprintf(stderr, "%s\n", pg.status().ToString().c_str()), 1;

  absl::StatusOr<std::string> sqlite_dir = MakeScratchDir("bench_sqlite");
  absl::StatusOr<std::string> postgres_dir = MakeScratchDir("bench_postgres");
  if (!sqlite_dir.ok() || !postgres_dir.ok()) return 1;
  absl::StatusOr<LocalCoordinator> sqlite =
      StartLocalCoordinator(binary, *sqlite_dir, {});
  absl::StatusOr<std::string> single_dsn = (*pg)->CreateDatabase("single");
  absl::StatusOr<std::string> replicas_dsn = (*pg)->CreateDatabase("replicas");
  if (!sqlite.ok() || !single_dsn.ok() || !replicas_dsn.ok()) {
    std::fprintf(stderr, "setup failed\n");
    return 1;
  }
  absl::StatusOr<LocalCoordinator> postgres = StartLocalCoordinator(
      binary, *postgres_dir,
      {"--store=postgres", "--postgres_dsn=" + *single_dsn});
  absl::StatusOr<std::unique_ptr<demo::CoordinatorReplicas>> replicas =
      demo::CoordinatorReplicas::Start(
          binary, *dir, *replicas_dsn, 3, {},
          demo::CoordinatorReplicas::Role::kReplicas);
  if (!postgres.ok() || !replicas.ok()) {
    std::fprintf(stderr, "%s %s\n", postgres.status().ToString().c_str(),
                 replicas.status().ToString().c_str());
    return 1;
  }
  struct Setup {
    std::string label;
    std::function<std::string(int)> target_of;
  };
  const std::vector<Setup> setups = {
      {"sqlite", [&](int) { return sqlite->target; }},
      {"postgres", [&](int) { return postgres->target; }},
      {"replicas", [&](int r) { return (*replicas)->target(r); }},
  };
  std::map<std::string, std::vector<double>> measured;
  for (int repeat = 0; repeat < absl::GetFlag(FLAGS_repeats); ++repeat) {
    for (const Setup& setup : setups) {
      absl::StatusOr<double> rate = Load(setup.label, setup.target_of, *dir);
      if (!rate.ok()) {
        std::fprintf(stderr, "%s\n", rate.status().ToString().c_str());
        return 1;
      }
      measured[setup.label].push_back(*rate);
      std::printf("%-9s %.0f reports/s\n", setup.label.c_str(), *rate);
      std::fflush(stdout);
    }
  }
  std::printf("runs %d x jobs %d, %d s each:", absl::GetFlag(FLAGS_runs),
              absl::GetFlag(FLAGS_jobs), absl::GetFlag(FLAGS_seconds));
  for (const Setup& setup : setups) {
    const std::vector<double>& v = measured[setup.label];
    std::printf(" %s %.0f-%.0f", setup.label.c_str(),
                *std::min_element(v.begin(), v.end()),
                *std::max_element(v.begin(), v.end()));
  }
  std::printf(" reports/s\n");
  return (*replicas)->StopAll().ok() ? 0 : 1;
}

}  // namespace
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return gradnorm::Main();
}
