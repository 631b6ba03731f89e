// A run's jobs reporting as fast as the coordinator answers: --jobs
// CoordinatorClients (one per job, each its own channel and ReportStream),
// each reporting step after step for --seconds. Prints one JSON line: rounds
// finalized, rounds/s, and the round latency (job 0's report to its answer)
// percentiles in milliseconds. Used by the dashboard load benchmark
// (tests/browser/dashboard_load_benchmark.py).
//
//   round_load --target=127.0.0.1:50051 --token_file=trainer.token
//       --run_id=load --jobs=32 --seconds=10 --first_step=0   (one line)
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "common/child_process.h"

ABSL_FLAG(std::string, target, "", "Coordinator host:port.");
ABSL_FLAG(std::string, token_file, "", "File holding a trainer token.");
ABSL_FLAG(std::string, run_id, "load", "The run (registered if new).");
ABSL_FLAG(int, jobs, 32, "Jobs (participants) reporting.");
ABSL_FLAG(int, seconds, 10, "How long to report.");
ABSL_FLAG(uint64_t, first_step, 0, "The first step reported.");

namespace gradnorm {
namespace {

int Main() {
  const int jobs = absl::GetFlag(FLAGS_jobs);
  std::string token;
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    token = ReadWholeFile(absl::GetFlag(FLAGS_token_file));
    token = token.substr(0, token.find('\n'));
  }
  std::vector<std::unique_ptr<CoordinatorClient>> clients;
  for (int j = 0; j < jobs; ++j) {
    CoordinatorClientOptions options;
    options.target = absl::GetFlag(FLAGS_target);
    options.bearer_token = token;
    absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
        CoordinatorClient::Create(options);
    if (!client.ok()) {
      std::fprintf(stderr, "round_load: %s\n",
                   client.status().ToString().c_str());
      return 1;
    }
    clients.push_back(*std::move(client));
  }
  v1::RunConfig config;
  config.set_participants(jobs);
  config.set_max_norm(1.0);
  config.set_round_timeout_ms(30000);
  config.set_inexact(true);  // its jobs report doubles
  const std::string run_id = absl::GetFlag(FLAGS_run_id);
  absl::StatusOr<v1::RegisterRunResponse> registered =
      clients[0]->RegisterRun(run_id, config, absl::Now() + absl::Seconds(10));
  if (!registered.ok()) {
    std::fprintf(stderr, "round_load: %s\n",
                 registered.status().ToString().c_str());
    return 1;
  }
  const uint64_t first = absl::GetFlag(FLAGS_first_step);
  const absl::Time end =
      absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_seconds));
  // Every job reports the same steps; job 0 times each round. Once time is
  // up, job 0 names its next step the last before reporting it; the others
  // cannot pass that step before job 0 reports it, so no round is left half
  // reported.
  std::atomic<uint64_t> stop_after{UINT64_MAX};
  std::atomic<bool> failed{false};
  std::vector<double> latencies_ms;
  std::vector<std::thread> threads;
  for (int j = 0; j < jobs; ++j) {
    threads.emplace_back([&, j] {
      for (uint64_t step = first;; ++step) {
        if (j == 0 && stop_after == UINT64_MAX && absl::Now() >= end) {
          stop_after = step;
        }
        if (step > stop_after.load()) return;
        v1::ReportRequest report;
        report.set_run_id(run_id);
        report.set_step(step);
        report.set_participant(j);
        report.set_partial(0.01 * (1 + (step + j) % 7));
        const absl::Time sent = absl::Now();
        absl::StatusOr<v1::RoundResult> result =
            clients[j]->Report(report, absl::Now() + absl::Seconds(30));
        if (!result.ok()) {
          std::fprintf(stderr, "round_load: job %d step %llu: %s\n", j,
                       static_cast<unsigned long long>(step),
                       result.status().ToString().c_str());
          failed = true;
          stop_after = 0;
          return;
        }
        if (j == 0) {
          latencies_ms.push_back(
              absl::ToDoubleMilliseconds(absl::Now() - sent));
        }
      }
    });
  }
  const absl::Time start = absl::Now();
  for (std::thread& t : threads) t.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (failed || latencies_ms.empty()) return 1;
  std::sort(latencies_ms.begin(), latencies_ms.end());
  auto pct = [&](double q) {
    return latencies_ms[std::min(latencies_ms.size() - 1,
                                 static_cast<size_t>(q * latencies_ms.size()))];
  };
  std::printf(
      "{\"rounds\":%zu,\"rounds_per_second\":%.1f,\"p50_ms\":%.3f,"
      "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"last_step\":%llu}\n",
      latencies_ms.size(), latencies_ms.size() / seconds, pct(0.5), pct(0.9),
      pct(0.99),
      static_cast<unsigned long long>(first + latencies_ms.size() - 1));
  return 0;
}

}  // namespace
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return gradnorm::Main();
}
