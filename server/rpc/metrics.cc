#include "server/rpc/metrics.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/rpc/process_metrics.h"

namespace gradnorm {
namespace server {

void InMemoryMetrics::RecordRoundWait(double seconds) {
  absl::MutexLock lock(&mu_);
  round_waits_.push_back(seconds);
}
void InMemoryMetrics::RecordReport(absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++reports_[code];
}
void InMemoryMetrics::RecordRound(gradnorm::v1::Action action) {
  absl::MutexLock lock(&mu_);
  ++rounds_[action];
}
void InMemoryMetrics::SetActiveRuns(int64_t runs) {
  absl::MutexLock lock(&mu_);
  active_runs_ = runs;
}
void InMemoryMetrics::RecordStoreCommit(double seconds) {
  absl::MutexLock lock(&mu_);
  store_commits_.push_back(seconds);
}
int64_t InMemoryMetrics::reports(absl::StatusCode code) const {
  absl::MutexLock lock(&mu_);
  auto it = reports_.find(code);
  return it == reports_.end() ? 0 : it->second;
}
int64_t InMemoryMetrics::rounds(gradnorm::v1::Action action) const {
  absl::MutexLock lock(&mu_);
  auto it = rounds_.find(action);
  return it == rounds_.end() ? 0 : it->second;
}
int64_t InMemoryMetrics::active_runs() const {
  absl::MutexLock lock(&mu_);
  return active_runs_;
}
std::vector<double> InMemoryMetrics::round_waits() const {
  absl::MutexLock lock(&mu_);
  return round_waits_;
}
std::vector<double> InMemoryMetrics::store_commits() const {
  absl::MutexLock lock(&mu_);
  return store_commits_;
}

// gradnorm_active_runs: the source's value at each scrape, or the last value
// set without one.
class ActiveRunsGauge : public prometheus::Collectable {
 public:
  void Set(int64_t value) {
    absl::MutexLock lock(&mu_);
    value_ = value;
  }
  void SetSource(std::function<int64_t()> source) {
    absl::MutexLock lock(&mu_);
    source_ = std::move(source);
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family;
    family.name = "gradnorm_active_runs";
    family.help = "Runs with open rounds or a report in the last 10 minutes";
    family.type = prometheus::MetricType::Gauge;
    prometheus::ClientMetric metric;
    {
      // Held while the source runs, so SetSource(nullptr) waits for it.
      absl::MutexLock lock(&mu_);
      metric.gauge.value = static_cast<double>(source_ ? source_() : value_);
    }
    family.metric.push_back(metric);
    return {family};
  }

 private:
  mutable absl::Mutex mu_;
  int64_t value_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<int64_t()> source_ ABSL_GUARDED_BY(mu_);
};

PrometheusMetrics::PrometheusMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      process_(std::make_shared<ProcessCollector>()),
      active_runs_(std::make_shared<ActiveRunsGauge>()) {
  // Round waits span a sub-millisecond local round to the default 60 s timeout.
  round_wait_ =
      &prometheus::BuildHistogram()
           .Name("gradnorm_round_wait_seconds")
           .Help("Time from a Report's arrival to its answer, seconds")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1, 2.5, 5, 10, 30, 60});
  reports_ = &prometheus::BuildCounter()
                  .Name("gradnorm_reports_total")
                  .Help("Report calls by result code")
                  .Register(*registry_);
  auto& rounds = prometheus::BuildCounter()
                     .Name("gradnorm_rounds_total")
                     .Help("Finalized rounds by action")
                     .Register(*registry_);
  rounds_none_ = &rounds.Add({{"action", "none"}});
  rounds_clip_ = &rounds.Add({{"action", "clip"}});
  rounds_skip_ = &rounds.Add({{"action", "skip"}});
  store_commit_ = &prometheus::BuildHistogram()
                       .Name("gradnorm_store_commit_seconds")
                       .Help("Telemetry store commit latency, seconds")
                       .Register(*registry_)
                       .Add({}, prometheus::Histogram::BucketBoundaries{
                                    0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1});
}

PrometheusMetrics::~PrometheusMetrics() = default;

std::unique_ptr<PrometheusMetrics> PrometheusMetrics::Create() {
  return std::unique_ptr<PrometheusMetrics>(new PrometheusMetrics());
}

void PrometheusMetrics::RecordRoundWait(double seconds) {
  round_wait_->Observe(seconds);
}

void PrometheusMetrics::RecordReport(absl::StatusCode code) {
  // Add() returns the existing series when the label set is already known.
  reports_->Add({{"code", absl::StatusCodeToString(code)}}).Increment();
}

void PrometheusMetrics::RecordRound(gradnorm::v1::Action action) {
  switch (action) {
    case gradnorm::v1::ACTION_CLIP:
      rounds_clip_->Increment();
      break;
    case gradnorm::v1::ACTION_SKIP:
      rounds_skip_->Increment();
      break;
    default:
      rounds_none_->Increment();
      break;
  }
}

void PrometheusMetrics::SetActiveRuns(int64_t runs) { active_runs_->Set(runs); }

void PrometheusMetrics::SetActiveRunsSource(std::function<int64_t()> source) {
  active_runs_->SetSource(std::move(source));
}

void PrometheusMetrics::RecordStoreCommit(double seconds) {
  store_commit_->Observe(seconds);
}

std::string PrometheusMetrics::TextSnapshot() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (const auto* extra :
       {static_cast<const prometheus::Collectable*>(process_.get()),
        static_cast<const prometheus::Collectable*>(active_runs_.get())}) {
    for (prometheus::MetricFamily& family : extra->Collect()) {
      families.push_back(std::move(family));
    }
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace server
}  // namespace gradnorm
