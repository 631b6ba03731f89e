// How fast a coordinator restarts on a long history: writes a database with
// --rounds finalized rounds of one run (--participants each) through the
// SQLite store, then starts the real coordinator binary on it --trials times
// and measures, from its exec:
//   - listening: the port file is written (the store is open and indexed);
//   - first round: every participant's report of a new step answered;
//   - late duplicate: a report of a stored step answered (read back);
//   - history: GetHistory over the whole run in --buckets buckets, by gRPC
//     and by the HTTP JSON API (a dashboard's query; first and best of 5);
// and the coordinator's resident memory once serving and after the
// history. Run from the
// repository root:
//
//   bazel build //server:coordinator //server/benchmark:restart_benchmark
//   bazel-bin/server/benchmark/restart_benchmark --rounds=1000000
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/child_process.h"
#include "server/http/http_test_client.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/sqlite_telemetry_store.h"

ABSL_FLAG(uint64_t, rounds, 1000000, "Stored rounds of the run");
ABSL_FLAG(uint32_t, participants, 4, "Participants of the run");
ABSL_FLAG(int, trials, 2, "Restarts measured");
ABSL_FLAG(uint32_t, buckets, 1000, "Buckets of the history queries");
ABSL_FLAG(std::string, coordinator, "bazel-bin/server/coordinator",
          "The coordinator binary");
ABSL_FLAG(std::string, db, "/tmp/gradnorm_restart_benchmark.db",
          "Database file (rewritten)");

namespace gradnorm {
namespace server {
namespace {

using testing::NewChannel;
using testing::TestClient;

double Partial(uint32_t participant, uint64_t step) {
  return 0.25 * (participant + 1) + 1e-6 * static_cast<double>(step % 1000);
}

int WriteHistory(const std::string& path, uint64_t rounds,
                 uint32_t participants) {
  for (const char* suffix : {"", "-wal", "-shm"})
    std::remove((path + suffix).c_str());
  SqliteStoreOptions options;
  options.path = path;
  auto store = SqliteTelemetryStore::Open(options);
  if (!store.ok()) {
    std::cerr << store.status() << "\n";
    return 1;
  }
  RunRecord run;
  run.run_id = "big";
  run.config.set_norm_type(2);
  run.config.set_max_norm(1);
  run.config.set_participants(participants);
  run.config.set_round_timeout_ms(60000);
  run.config.set_inexact(true);  // its reports are doubles
  run.config.set_nonfinite_policy(v1::NON_FINITE_POLICY_SKIP);
  run.created_unix_micros = absl::ToUnixMicros(absl::Now());
  if (absl::Status s = (*store)->PutRun(run); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  for (uint64_t step = 0; step < rounds; ++step) {
    RoundRecord record;
    record.sequence = step + 1;
    v1::RoundResult& r = record.result;
    r.set_run_id("big");
    r.set_step(step);
    double sum = 0;
    record.participants.resize(participants);
    for (uint32_t p = 0; p < participants; ++p) {
      record.participants[p] =
          ParticipantRecord{Partial(p, step), 0.001 * p, 1000};
      sum += Partial(p, step);
    }
    r.set_total_norm(std::sqrt(sum));
    r.set_clip_coef(1.0 / (r.total_norm() + 1e-6));
    r.set_action(v1::ACTION_CLIP);
    r.set_reason(v1::REASON_ABOVE_MAX_NORM);
    r.set_effective_max_norm(1);
    r.set_finalized_unix_micros(run.created_unix_micros + step);
    (*store)->AppendRound(std::move(record), [](absl::Status) {});
  }
  if (absl::Status s = (*store)->Flush(); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  return 0;
}

long ResidentKiB(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

int Trial(int trial, const std::string& binary, const std::string& db,
          uint64_t rounds, uint32_t participants) {
  const std::string port_file = db + ".port";
  const std::string http_port_file = db + ".http.port";
  std::remove(port_file.c_str());
  std::remove(http_port_file.c_str());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Start(
      {binary, "--listen=127.0.0.1:0", "--log_level=warning", "--db=" + db,
       "--port_file=" + port_file, "--http_listen=127.0.0.1:0",
       "--http_port_file=" + http_port_file},
      ChildOptions());
  if (!child.ok()) {
    std::cerr << child.status() << "\n";
    return 1;
  }
  const pid_t pid = (*child)->pid();
  int port = 0;
  while (absl::Now() - start < absl::Minutes(5)) {
    std::ifstream in(port_file);
    if (in >> port) break;
    absl::SleepFor(absl::Milliseconds(2));
  }
  const absl::Duration listening = absl::Now() - start;
  if (port == 0) {
    std::cerr << "the coordinator did not listen within 5 minutes\n";
    return 1;
  }
  const std::string target = absl::StrCat("127.0.0.1:", port);
  TestClient client(NewChannel(target));
  const uint64_t step = rounds + trial;
  std::vector<std::unique_ptr<testing::PendingReport>> reports;
  for (uint32_t p = 0; p < participants; ++p) {
    reports.push_back(client.StartReport("big", step, p, Partial(p, step),
                                         absl::Seconds(120)));
  }
  for (auto& report : reports) {
    if (!report->WaitFor(absl::Seconds(120)) || !report->status.ok()) {
      std::cerr << "the first round failed: " << report->status.error_message()
                << "\n";
      return 1;
    }
  }
  const absl::Duration first_round = absl::Now() - start;
  const long rss_serving = ResidentKiB(pid);
  absl::Time t = absl::Now();
  const uint64_t old_step = rounds / 2;
  grpc::Status late = client.Report("big", old_step, 0, Partial(0, old_step));
  const absl::Duration late_duplicate = absl::Now() - t;
  t = absl::Now();
  v1::GetHistoryRequest request;
  request.set_run_id("big");
  const uint32_t buckets = absl::GetFlag(FLAGS_buckets);
  request.set_max_points(buckets);
  v1::GetHistoryResponse history;
  grpc::Status queried = client.GetHistory(request, &history);
  const absl::Duration history_time = absl::Now() - t;
  int http_port = 0;
  std::ifstream(http_port_file) >> http_port;
  absl::Duration http_first = absl::InfiniteDuration();
  absl::Duration http_best = absl::InfiniteDuration();
  size_t http_bytes = 0;
  for (int i = 0; i < 5; ++i) {
    t = absl::Now();
    const std::string answer = testing::HttpGet(
        http_port, absl::StrCat("/api/v1/runs/big/history?buckets=", buckets));
    const absl::Duration took = absl::Now() - t;
    if (answer.rfind("HTTP/1.1 200", 0) != 0) {
      std::cerr << "HTTP history failed: " << answer.substr(0, 300) << "\n";
      return 1;
    }
    http_bytes = answer.size();
    if (i == 0) http_first = took;
    http_best = std::min(http_best, took);
  }
  const long rss = ResidentKiB(pid);
  (*child)->Signal(SIGTERM);
  (*child)->Wait(absl::Now() + absl::Minutes(1)).IgnoreError();
  if (!late.ok() || !queried.ok()) {
    std::cerr << "late duplicate: " << late.error_message()
              << "; history: " << queried.error_message() << "\n";
    return 1;
  }
  std::printf(
      "trial %d: %llu stored rounds x %u participants: listening after %.2f s, "
      "first round served after %.2f s (the goal: under 5 s), late duplicate "
      "%.1f ms, history of all %llu rounds in %d buckets %.3f s (gRPC), "
      "HTTP JSON API %.3f s first, %.3f s best of 5 (%zu bytes), resident "
      "memory %.1f MiB serving, %.1f MiB after the history\n",
      trial, static_cast<unsigned long long>(rounds), participants,
      absl::ToDoubleSeconds(listening), absl::ToDoubleSeconds(first_round),
      absl::ToDoubleMilliseconds(late_duplicate),
      static_cast<unsigned long long>(rounds + trial), history.buckets_size(),
      absl::ToDoubleSeconds(history_time), absl::ToDoubleSeconds(http_first),
      absl::ToDoubleSeconds(http_best), http_bytes, rss_serving / 1024.0,
      rss / 1024.0);
  return 0;
}

}  // namespace
}  // namespace server
}  // namespace gradnorm

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string db = absl::GetFlag(FLAGS_db);
  const uint64_t rounds = absl::GetFlag(FLAGS_rounds);
  const uint32_t participants = absl::GetFlag(FLAGS_participants);
  if (rounds == 0 || participants == 0) {
    std::cerr << "--rounds and --participants must be >= 1\n";
    return 2;
  }
  const absl::Time start = absl::Now();
  if (int rc = gradnorm::server::WriteHistory(db, rounds, participants);
      rc != 0)
    return rc;
  std::printf("wrote %llu rounds in %.1f s\n",
              static_cast<unsigned long long>(rounds),
              absl::ToDoubleSeconds(absl::Now() - start));
  for (int trial = 1; trial <= absl::GetFlag(FLAGS_trials); ++trial) {
    if (int rc = gradnorm::server::Trial(
            trial, absl::GetFlag(FLAGS_coordinator), db, rounds, participants);
        rc != 0) {
      return rc;
    }
  }
  for (const char* suffix : {"", "-wal", "-shm", ".port", ".http.port"})
    std::remove((db + suffix).c_str());
  return 0;
}
