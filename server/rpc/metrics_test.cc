#include "server/rpc/metrics.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(InMemoryMetricsTest, KeepsWhatWasRecorded) {
  InMemoryMetrics metrics;
  metrics.RecordReport(absl::StatusCode::kOk);
  metrics.RecordReport(absl::StatusCode::kOk);
  metrics.RecordReport(absl::StatusCode::kNotFound);
  metrics.RecordRound(gradnorm::v1::ACTION_CLIP);
  metrics.SetActiveRuns(3);
  metrics.RecordRoundWait(0.25);
  metrics.RecordStoreCommit(0.001);
  EXPECT_EQ(metrics.reports(absl::StatusCode::kOk), 2);
  EXPECT_EQ(metrics.reports(absl::StatusCode::kNotFound), 1);
  EXPECT_EQ(metrics.reports(absl::StatusCode::kInternal), 0);
  EXPECT_EQ(metrics.rounds(gradnorm::v1::ACTION_CLIP), 1);
  EXPECT_EQ(metrics.rounds(gradnorm::v1::ACTION_SKIP), 0);
  EXPECT_EQ(metrics.active_runs(), 3);
  EXPECT_EQ(metrics.round_waits(), std::vector<double>{0.25});
  EXPECT_EQ(metrics.store_commits(), std::vector<double>{0.001});
}

TEST(PrometheusMetricsTest, ScrapeShowsEverySeries) {
  auto metrics = PrometheusMetrics::Create();
  metrics->RecordReport(absl::StatusCode::kOk);
  metrics->RecordReport(absl::StatusCode::kAlreadyExists);
  metrics->RecordRound(gradnorm::v1::ACTION_SKIP);
  metrics->RecordRound(gradnorm::v1::ACTION_NONE);
  metrics->RecordRound(gradnorm::v1::ACTION_NONE);
  metrics->SetActiveRuns(7);
  metrics->RecordRoundWait(0.003);
  metrics->RecordStoreCommit(0.0002);

  const std::string text = metrics->TextSnapshot();
  EXPECT_TRUE(absl::StrContains(text, "gradnorm_reports_total{code=\"OK\"} 1"))
      << text;
  EXPECT_TRUE(absl::StrContains(
      text, "gradnorm_reports_total{code=\"ALREADY_EXISTS\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "gradnorm_rounds_total{action=\"none\"} 2"));
  EXPECT_TRUE(
      absl::StrContains(text, "gradnorm_rounds_total{action=\"skip\"} 1"));
  EXPECT_TRUE(
      absl::StrContains(text, "gradnorm_rounds_total{action=\"clip\"} 0"));
  EXPECT_TRUE(absl::StrContains(text, "gradnorm_active_runs 7"));
  EXPECT_TRUE(absl::StrContains(text, "gradnorm_round_wait_seconds_count 1"));
  EXPECT_TRUE(absl::StrContains(
      text, "gradnorm_round_wait_seconds_bucket{le=\"0.005\"} 1"));
  EXPECT_TRUE(absl::StrContains(
      text, "gradnorm_round_wait_seconds_bucket{le=\"0.0025\"} 0"));
  EXPECT_TRUE(absl::StrContains(text, "gradnorm_store_commit_seconds_count 1"));
  // The standard process metrics and the build's version, on the same page.
  EXPECT_TRUE(absl::StrContains(text, "\nprocess_cpu_seconds_total ")) << text;
  EXPECT_TRUE(absl::StrContains(text, "\nprocess_open_fds ")) << text;
  EXPECT_TRUE(absl::StrContains(text, "gradnorm_build_info{version=\""))
      << text;
}

TEST(PrometheusMetricsTest, ActiveRunsFromTheValueOrASource) {
  auto metrics = PrometheusMetrics::Create();
  metrics->SetActiveRuns(2);
  EXPECT_TRUE(
      absl::StrContains(metrics->TextSnapshot(), "gradnorm_active_runs 2"));
  // A source is read at each scrape, and clearing it goes back to the value.
  int64_t live = 5;
  metrics->SetActiveRunsSource([&live] { return live; });
  EXPECT_TRUE(
      absl::StrContains(metrics->TextSnapshot(), "gradnorm_active_runs 5"));
  live = 6;
  EXPECT_TRUE(
      absl::StrContains(metrics->TextSnapshot(), "gradnorm_active_runs 6"));
  metrics->SetActiveRunsSource(nullptr);
  EXPECT_TRUE(
      absl::StrContains(metrics->TextSnapshot(), "gradnorm_active_runs 2"));
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
