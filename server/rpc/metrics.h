// The coordinator's own operational metrics (never per-run labels, so the
// number of series stays fixed however many runs are served).
//
//   std::unique_ptr<PrometheusMetrics> metrics = PrometheusMetrics::Create();
//   metrics->RecordReport(absl::StatusCode::kOk);
//   std::string page = metrics->TextSnapshot();  // what GET /metrics answers
//
// The coordinator serves the page on its HTTP port (server/http/json_api.h),
// next to the dashboard and the JSON API: one HTTP server per process.
//
// Series (Prometheus names):
//   gradnorm_round_wait_seconds            histogram: a Report's time from
//                                          arrival to answer (waiting for the
//                                          other participants included)
//   gradnorm_reports_total{code="OK"|...}  counter: Report calls by result code
//   gradnorm_rounds_total{action="none"|"clip"|"skip"}  counter: finalized
//   rounds gradnorm_active_runs                   gauge: runs with open rounds
//   or
//                                          recent reports
//   gradnorm_store_commit_seconds          histogram: telemetry commit latency
//   gradnorm_build_info{version}           gauge: always 1
//   process_cpu_seconds_total, process_resident_memory_bytes,
//   process_virtual_memory_bytes, process_open_fds, process_max_fds,
//   process_start_time_seconds             the standard process metrics
//
// Thread-safety: every implementation is safe to call from any thread.
#ifndef GRADNORM_SERVER_RPC_METRICS_H_
#define GRADNORM_SERVER_RPC_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace prometheus {
class Collectable;
class Registry;
class Histogram;
class Counter;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace gradnorm {
namespace server {

class CoordinatorMetrics {
 public:
  virtual ~CoordinatorMetrics() = default;
  // One Report call answered after `seconds` (any result).
  virtual void RecordRoundWait(double seconds) = 0;
  // One Report call answered with `code`.
  virtual void RecordReport(absl::StatusCode code) = 0;
  // One round finalized with `action`.
  virtual void RecordRound(gradnorm::v1::Action action) = 0;
  // The number of runs currently served.
  virtual void SetActiveRuns(int64_t runs) = 0;
  // One store commit took `seconds`.
  virtual void RecordStoreCommit(double seconds) = 0;
};

// Discards everything (metrics off).
class NullMetrics : public CoordinatorMetrics {
 public:
  void RecordRoundWait(double) override {}
  void RecordReport(absl::StatusCode) override {}
  void RecordRound(gradnorm::v1::Action) override {}
  void SetActiveRuns(int64_t) override {}
  void RecordStoreCommit(double) override {}
};

// The in-memory twin: keeps what was recorded so tests can read it.
class InMemoryMetrics : public CoordinatorMetrics {
 public:
  void RecordRoundWait(double seconds) override;
  void RecordReport(absl::StatusCode code) override;
  void RecordRound(gradnorm::v1::Action action) override;
  void SetActiveRuns(int64_t runs) override;
  void RecordStoreCommit(double seconds) override;

  int64_t reports(absl::StatusCode code) const;
  int64_t rounds(gradnorm::v1::Action action) const;
  int64_t active_runs() const;
  std::vector<double> round_waits() const;
  std::vector<double> store_commits() const;

 private:
  mutable absl::Mutex mu_;
  std::map<absl::StatusCode, int64_t> reports_ ABSL_GUARDED_BY(mu_);
  std::map<gradnorm::v1::Action, int64_t> rounds_ ABSL_GUARDED_BY(mu_);
  int64_t active_runs_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> round_waits_ ABSL_GUARDED_BY(mu_);
  std::vector<double> store_commits_ ABSL_GUARDED_BY(mu_);
};

// Prometheus metrics, exposed as text (TextSnapshot) for the HTTP port's
// /metrics.
class ActiveRunsGauge;

class PrometheusMetrics : public CoordinatorMetrics {
 public:
  static std::unique_ptr<PrometheusMetrics> Create();
  ~PrometheusMetrics() override;

  void RecordRoundWait(double seconds) override;
  void RecordReport(absl::StatusCode code) override;
  void RecordRound(gradnorm::v1::Action action) override;
  void SetActiveRuns(int64_t runs) override;
  void RecordStoreCommit(double seconds) override;
  // gradnorm_active_runs read from `source` at each scrape instead of the
  // last SetActiveRuns value; an empty function goes back to that value.
  // Returns once no scrape uses the previous source (so its owner may go).
  void SetActiveRunsSource(std::function<int64_t()> source);

  // The exposition text, exactly as a scrape of /metrics returns it.
  std::string TextSnapshot() const;

 private:
  PrometheusMetrics();

  std::shared_ptr<prometheus::Registry> registry_;
  // process_* and gradnorm_build_info, read at each scrape.
  std::shared_ptr<prometheus::Collectable> process_;
  // gradnorm_active_runs, read at each scrape.
  std::shared_ptr<ActiveRunsGauge> active_runs_;
  prometheus::Histogram* round_wait_ = nullptr;
  prometheus::Family<prometheus::Counter>* reports_ = nullptr;
  prometheus::Counter* rounds_none_ = nullptr;
  prometheus::Counter* rounds_clip_ = nullptr;
  prometheus::Counter* rounds_skip_ = nullptr;
  prometheus::Histogram* store_commit_ = nullptr;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_METRICS_H_
