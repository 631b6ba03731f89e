// The provisioned Grafana dashboard (deploy/grafana/dashboards/gradnorm.json)
// against the coordinator's own answers: a coordinator on a real PostgreSQL
// runs a two-job run with clips, spike skips and a NaN step; each panel's SQL,
// with the dashboard's variables filled in as Grafana would, runs on that
// database, and its numbers must be the history and summary APIs' numbers.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/rpc/coordinator_test_util.h"
#include "server/store/local_postgres.h"
#include "server/store/postgres_connection.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace {

using ::gradnorm::server::testing::NewChannel;
using ::gradnorm::server::testing::TestClient;
using Rows = std::vector<std::vector<std::optional<std::string>>>;

constexpr int kSteps = 300;
constexpr char kRun[] = "grafana-run";

// Job p's partial at a step: totals around 2-6 (max_norm 4 clips some), a
// spike every 50 steps from step 60 (after the spike rule's warm-up), and a
// NaN at step 77.
double Partial(int p, int step) {
  if (step == 77 && p == 1) return NAN;
  double v = 2.0 + p + 6.0 * (1.0 + std::sin(0.37 * step + p));
  if (step >= 60 && step % 50 == 10) v *= 1e4;
  return v;
}

// The dashboard's panels by title: their SQL.
std::map<std::string, std::string> PanelSql() {
  std::ifstream in("deploy/grafana/dashboards/gradnorm.json");
  std::stringstream text;
  text << in.rdbuf();
  google::protobuf::Struct dashboard;
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(text.str(), &dashboard).ok());
  std::map<std::string, std::string> sql;
  for (const auto& panel :
       dashboard.fields().at("panels").list_value().values()) {
    const auto& fields = panel.struct_value().fields();
    const auto& targets = fields.at("targets").list_value().values();
    EXPECT_EQ(targets.size(), 1u);
    sql[fields.at("title").string_value()] =
        targets[0].struct_value().fields().at("rawSql").string_value();
  }
  return sql;
}

double Number(const std::optional<std::string>& cell) {
  return cell.has_value() ? std::strtod(cell->c_str(), nullptr) : NAN;
}

// Equal, NaN meeting NULL; means to 1e-12 (PostgreSQL sums in its own order).
void ExpectSame(double api, const std::optional<std::string>& sql,
                const std::string& what, double tolerance = 0) {
  if (std::isnan(api)) {
    EXPECT_FALSE(sql.has_value()) << what << ": SQL " << *sql;
    return;
  }
  ASSERT_TRUE(sql.has_value()) << what << ": NULL, API " << api;
  if (tolerance == 0) {
    EXPECT_EQ(Number(sql), api) << what;
  } else {
    EXPECT_NEAR(Number(sql), api, tolerance * std::abs(api)) << what;
  }
}

TEST(GrafanaPanelsTest, EveryPanelAgreesWithTheCoordinator) {
  const std::map<std::string, std::string> panels = PanelSql();
  ASSERT_EQ(panels.size(), 6u);

  absl::StatusOr<std::unique_ptr<server::LocalPostgres>> pg =
      server::LocalPostgres::Start();
  ASSERT_TRUE(pg.ok()) << pg.status();
  absl::StatusOr<std::string> dsn = (*pg)->CreateDatabase("gradnorm");
  ASSERT_TRUE(dsn.ok()) << dsn.status();
  absl::StatusOr<std::string> dir = MakeScratchDir("grafana");
  ASSERT_TRUE(dir.ok());
  absl::StatusOr<LocalCoordinator> coordinator =
      StartLocalCoordinator("server/coordinator", *dir,
                            {"--store=postgres", "--postgres_dsn=" + *dsn});
  ASSERT_TRUE(coordinator.ok()) << coordinator.status();

  TestClient client(NewChannel(coordinator->target));
  v1::RunConfig config;
  config.set_participants(2);
  config.set_max_norm(4.0);
  config.set_inexact(true);  // doubles are reported
  config.mutable_spike_rule()->set_enabled(true);
  config.mutable_spike_rule()->set_sigma(6.0);
  config.mutable_spike_rule()->set_window(32);
  config.mutable_spike_rule()->set_warmup_steps(16);
  ASSERT_TRUE(client.RegisterRun(kRun, config).ok());
  std::vector<std::thread> jobs;
  for (int p = 0; p < 2; ++p) {
    jobs.emplace_back([&, p] {
      TestClient job(NewChannel(coordinator->target));
      for (int step = 0; step < kSteps; ++step) {
        ASSERT_TRUE(job.Report(kRun, step, p, Partial(p, step)).ok());
      }
    });
  }
  for (std::thread& t : jobs) t.join();

  absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
      server::PgConnection::Connect(*dsn);
  ASSERT_TRUE(db.ok()) << db.status();
  auto query = [&](const std::string& title, int bucket_steps) -> Rows {
    EXPECT_EQ(panels.count(title), 1u) << title;
    const std::string sql = absl::StrReplaceAll(
        panels.at(title),
        {{"$run", kRun}, {"$bucket_steps", absl::StrCat(bucket_steps)}});
    absl::StatusOr<Rows> rows = (*db)->QueryText(sql);
    EXPECT_TRUE(rows.ok()) << title << ": " << rows.status();
    return rows.ok() ? *rows : Rows();
  };

  // Buckets of 1 step (no downsampling) and of 128 steps (3 points over 300
  // steps: 100 steps each, rounded up to a multiple of 64 and aligned).
  int clips = 0, spikes = 0, nonfinite = 0;
  for (const auto& [max_points, width] :
       std::vector<std::pair<int, int>>{{0, 1}, {3, 128}}) {
    v1::GetHistoryRequest request;
    request.set_run_id(kRun);
    request.set_max_points(max_points);
    v1::GetHistoryResponse history;
    ASSERT_TRUE(client.GetHistory(request, &history).ok());
    const Rows norms = query(
        "Total norm per bucket: min, mean, max and the threshold in force",
        width);
    const Rows counts = query("Clipped and skipped rounds per bucket", width);
    const Rows spread =
        query("Arrival spread per bucket (largest, seconds)", width);
    ASSERT_EQ(norms.size(), static_cast<size_t>(history.buckets_size()));
    ASSERT_EQ(counts.size(), norms.size());
    ASSERT_EQ(spread.size(), norms.size());
    for (int b = 0; b < history.buckets_size(); ++b) {
      const v1::HistoryBucket& bucket = history.buckets(b);
      ASSERT_EQ(bucket.first_step() / width, bucket.last_step() / width);
      const std::string at = absl::StrCat("width ", width, " bucket ", b);
      ExpectSame(bucket.min_norm(), norms[b][1], at + " min");
      ExpectSame(bucket.mean_norm(), norms[b][2], at + " mean", 1e-12);
      ExpectSame(bucket.max_norm(), norms[b][3], at + " max");
      ExpectSame(bucket.effective_max_norm(), norms[b][4], at + " threshold");
      EXPECT_EQ(Number(counts[b][1]), bucket.clipped()) << at;
      EXPECT_EQ(Number(counts[b][2]), bucket.skipped_nonfinite()) << at;
      EXPECT_EQ(Number(counts[b][3]), bucket.skipped_spike()) << at;
      ExpectSame(bucket.max_arrival_spread_seconds(), spread[b][1],
                 at + " spread");
      if (width == 1) {
        clips += bucket.clipped();
        spikes += bucket.skipped_spike();
        nonfinite += bucket.skipped_nonfinite();
      }
    }
  }
  // The run has all three kinds of marker, and the marker table lists each.
  EXPECT_GT(clips, 0);
  EXPECT_GT(spikes, 0);
  EXPECT_EQ(nonfinite, 1);
  const Rows markers = query("Clip and skip markers", 1);
  EXPECT_EQ(markers.size(), static_cast<size_t>(clips + spikes + nonfinite));
  for (const auto& row : markers) {
    if (*row[1] == "77") {
      EXPECT_EQ(*row[2], "SKIP");
      EXPECT_EQ(*row[3], "NaN/Inf");
    }
  }

  v1::GetSummaryRequest request;
  request.set_run_id(kRun);
  request.set_top_slowest(2);
  v1::GetSummaryResponse summary;
  ASSERT_TRUE(client.GetSummary(request, &summary).ok());
  const Rows stats = query("Percentiles of the total norm", 1);
  ASSERT_EQ(stats.size(), 1u);
  EXPECT_EQ(Number(stats[0][0]), summary.rounds());
  ExpectSame(summary.p50_norm(), stats[0][1], "p50");
  ExpectSame(summary.p90_norm(), stats[0][2], "p90");
  ExpectSame(summary.p99_norm(), stats[0][3], "p99");
  ExpectSame(summary.min_norm(), stats[0][4], "min");
  ExpectSame(summary.max_norm(), stats[0][5], "max");
  ExpectSame(summary.mean_norm(), stats[0][6], "mean", 1e-12);
  ExpectSame(summary.clipped_fraction(), stats[0][7], "clipped", 1e-12);

  const Rows stragglers =
      query("Stragglers: rounds in which each participant reported last", 1);
  std::map<std::string, double> times;
  for (const auto& row : stragglers) times[*row[0]] = Number(row[1]);
  uint64_t total = 0;
  for (const v1::ParticipantLag& lag : summary.slowest_participants()) {
    EXPECT_EQ(times[absl::StrCat(lag.participant())],
              static_cast<double>(lag.times_slowest()))
        << "participant " << lag.participant();
    total += lag.times_slowest();
  }
  EXPECT_EQ(total, static_cast<uint64_t>(kSteps));
}

}  // namespace
}  // namespace gradnorm
