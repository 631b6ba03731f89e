#include "server/http/json_api.h"

#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/aggregator.h"
#include "server/core/clock.h"
#include "server/rpc/auth.h"
#include "server/store/memory_telemetry_store.h"

namespace gradnorm {
namespace server {
namespace {

using ::testing::HasSubstr;

constexpr char kTokens[] =
    "trainer-token-0123456789 trainer\n"
    "viewer-token-0123456789 viewer\n";

class JsonApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    AggregatorOptions options;
    options.expiry_interval = absl::ZeroDuration();
    auto created = Aggregator::Create(options, &store_, &clock_);
    ASSERT_TRUE(created.ok()) << created.status();
    aggregator_ = *std::move(created);
    auto auth = TokenAuthenticator::Parse(kTokens, "tokens");
    ASSERT_TRUE(auth.ok()) << auth.status();
    auth_ = *std::move(auth);
    v1::RegisterRunRequest run;
    run.set_run_id("r");
    run.mutable_config()->set_participants(1);
    run.mutable_config()->set_max_norm(4);
    run.mutable_config()->set_inexact(true);  // doubles are reported
    ASSERT_TRUE(aggregator_->RegisterRun(run).ok());
    // Totals 3, 5, 4, 100, one a second: all but the first clipped (a total
    // of exactly max_norm too: 4 / (4 + 1e-6) < 1).
    const double partials[] = {9, 25, 16, 10000};
    for (int step = 0; step < 4; ++step) {
      v1::ReportRequest report;
      report.set_run_id("r");
      report.set_step(step);
      report.set_partial(partials[step]);
      bool done = false;
      aggregator_->Report(report, absl::InfiniteFuture(),
                          [&](absl::StatusOr<v1::RoundResult> result) {
                            EXPECT_TRUE(result.ok()) << result.status();
                            done = true;
                          });
      ASSERT_TRUE(done);
      clock_.Advance(absl::Seconds(1));
    }
  }

  HttpResponse Get(const std::string& path,
                   std::map<std::string, std::string> query = {},
                   const std::string& token = "viewer-token-0123456789") {
    JsonApi api(aggregator_.get(), auth_.get(),
                [] { return std::string("gradnorm_rounds_total 4\n"); });
    HttpRequest request;
    request.method = "GET";
    request.path = path;
    request.query = std::move(query);
    if (!token.empty()) request.authorization = "Bearer " + token;
    return api.Handle(request);
  }

  FakeClock clock_{absl::FromUnixSeconds(1'700'000'000)};
  MemoryTelemetryStore store_;
  std::unique_ptr<Aggregator> aggregator_;
  std::unique_ptr<TokenAuthenticator> auth_;
};

TEST_F(JsonApiTest, RunsAndOneRun) {
  HttpResponse runs = Get("/api/v1/runs");
  EXPECT_EQ(runs.status, 200);
  EXPECT_EQ(runs.content_type, "application/json");
  EXPECT_THAT(runs.body,
              HasSubstr("{\"runs\":[{\"run_id\":\"r\",\"config\":{"));
  EXPECT_THAT(runs.body, HasSubstr("\"rounds\":4,\"last_step\":3,"));
  HttpResponse run = Get("/api/v1/runs/r");
  EXPECT_EQ(run.status, 200);
  EXPECT_THAT(run.body, HasSubstr("{\"run\":{\"run_id\":\"r\""));
  EXPECT_THAT(run.body, HasSubstr("\"max_norm\":4,"));
  EXPECT_THAT(run.body, HasSubstr("\"finished\":false"));
}

TEST_F(JsonApiTest, HistoryDownsampledToBuckets) {
  HttpResponse history = Get("/api/v1/runs/r/history", {{"buckets", "2"}});
  EXPECT_EQ(history.status, 200) << history.body;
  EXPECT_EQ(history.body,
            "{\"buckets\":[{\"first_step\":0,\"last_step\":1,\"rounds\":2,"
            "\"min_norm\":3,\"max_norm\":5,\"mean_norm\":4,\"last_norm\":5,"
            "\"clipped\":1,\"skipped\":0,\"max_arrival_spread_seconds\":0,"
            "\"first_finalized_unix_micros\":1700000000000000,"
            "\"last_finalized_unix_micros\":1700000001000000,"
            "\"effective_max_norm\":4,\"skipped_nonfinite\":0,"
            "\"skipped_spike\":0},"
            "{\"first_step\":2,\"last_step\":3,\"rounds\":2,\"min_norm\":4,"
            "\"max_norm\":100,\"mean_norm\":52,\"last_norm\":100,"
            "\"clipped\":2,\"skipped\":0,\"max_arrival_spread_seconds\":0,"
            "\"first_finalized_unix_micros\":1700000002000000,"
            "\"last_finalized_unix_micros\":1700000003000000,"
            "\"effective_max_norm\":4,\"skipped_nonfinite\":0,"
            "\"skipped_spike\":0}],"
            "\"downsampled\":true}");
  HttpResponse range =
      Get("/api/v1/runs/r/history", {{"from", "1"}, {"to", "2"}});
  EXPECT_THAT(range.body, HasSubstr("\"first_step\":1,"));
  EXPECT_THAT(range.body, HasSubstr("\"first_step\":2,"));
  EXPECT_THAT(range.body, ::testing::Not(HasSubstr("\"first_step\":3,")));
}

TEST_F(JsonApiTest, Summary) {
  HttpResponse summary = Get("/api/v1/runs/r/summary", {{"top", "1"}});
  EXPECT_EQ(summary.status, 200) << summary.body;
  EXPECT_THAT(summary.body, HasSubstr("\"rounds\":4,"));
  EXPECT_THAT(summary.body, HasSubstr("\"clipped_fraction\":0.75,"));
}

TEST_F(JsonApiTest, RoundsInPagesAsJsonOrCsv) {
  HttpResponse first = Get("/api/v1/runs/r/rounds", {{"limit", "2"}});
  EXPECT_EQ(first.status, 200) << first.body;
  EXPECT_THAT(first.body,
              ::testing::StartsWith("{\"rounds\":[{\"run_id\":\"r\",\"step\":0,"
                                    "\"total_norm\":3,"));
  EXPECT_THAT(first.body, HasSubstr("{\"run_id\":\"r\",\"step\":1,"
                                    "\"total_norm\":5,"));
  EXPECT_THAT(first.body, ::testing::EndsWith("}],\"next_from\":2}"));
  HttpResponse second =
      Get("/api/v1/runs/r/rounds", {{"limit", "2"}, {"from", "2"}});
  EXPECT_THAT(second.body, HasSubstr("\"step\":3,"));
  EXPECT_THAT(second.body, ::testing::EndsWith("],\"next_from\":4}"));
  HttpResponse last =
      Get("/api/v1/runs/r/rounds", {{"limit", "2"}, {"from", "4"}});
  EXPECT_EQ(last.body, "{\"rounds\":[],\"next_from\":null}");
  HttpResponse bounded =
      Get("/api/v1/runs/r/rounds", {{"to", "1"}, {"limit", "2"}});
  EXPECT_THAT(bounded.body, ::testing::EndsWith("],\"next_from\":null}"));

  HttpResponse csv = Get("/api/v1/runs/r/rounds",
                         {{"format", "csv"}, {"from", "2"}, {"to", "3"}});
  EXPECT_EQ(csv.status, 200);
  EXPECT_EQ(csv.content_type, "text/csv");
  EXPECT_EQ(csv.body,
            "step,total_norm,clip_coef,action,reason,effective_max_norm,"
            "arrival_spread_seconds,slowest_participant,finalized_unix_micros\n"
            "2,4,0.9999997500000625,ACTION_CLIP,REASON_ABOVE_MAX_NORM,4,0,0,"
            "1700000002000000\n"
            "3,100,0.0399999996,ACTION_CLIP,REASON_ABOVE_MAX_NORM,4,0,0,"
            "1700000003000000\n");

  EXPECT_EQ(Get("/api/v1/runs/r/rounds", {{"limit", "0"}}).status, 400);
  EXPECT_EQ(Get("/api/v1/runs/r/rounds", {{"limit", "10001"}}).status, 400);
  HttpResponse xml = Get("/api/v1/runs/r/rounds", {{"format", "xml"}});
  EXPECT_EQ(xml.status, 400);
  EXPECT_THAT(xml.body, HasSubstr("format=xml is unknown"));
  EXPECT_EQ(Get("/api/v1/runs/nobody/rounds").status, 404);
}

TEST_F(JsonApiTest, MetricsAsPrometheusText) {
  HttpResponse metrics = Get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.content_type, "text/plain; version=0.0.4");
  EXPECT_EQ(metrics.body, "gradnorm_rounds_total 4\n");
}

TEST_F(JsonApiTest, ErrorsCarryTheirHttpStatusAndCode) {
  HttpResponse missing = Get("/api/v1/runs/nobody");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("{\"code\":\"NOT_FOUND\",\"message\":"
                                      "\"run nobody is not registered"));
  EXPECT_EQ(Get("/api/v1/runs/r/nothing").status, 404);
  EXPECT_EQ(Get("/elsewhere").status, 404);
  HttpResponse bad = Get("/api/v1/runs/r/history", {{"buckets", "-1"}});
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("query parameter buckets=-1 is invalid"));
  EXPECT_EQ(Get("/api/v1/runs/r/history", {{"from", "3"}, {"to", "1"}}).status,
            400);
  EXPECT_EQ(Get("/api/v1/runs/bad id").status, 400);
}

TEST_F(JsonApiTest, ViewerTokenRequired) {
  HttpResponse none = Get("/api/v1/runs", {}, "");
  EXPECT_EQ(none.status, 401);
  EXPECT_THAT(none.body, HasSubstr("\"code\":\"UNAUTHENTICATED\""));
  EXPECT_EQ(Get("/api/v1/runs", {}, "wrong-token-0123456789").status, 401);
  EXPECT_EQ(Get("/metrics", {}, "").status, 401);
  // Viewer or better: a trainer may read too.
  EXPECT_EQ(Get("/api/v1/runs", {}, "trainer-token-0123456789").status, 200);
}

TEST_F(JsonApiTest, ReadOnly) {
  JsonApi api(aggregator_.get(), nullptr);
  HttpRequest post;
  post.method = "POST";
  post.path = "/api/v1/runs";
  EXPECT_EQ(api.Handle(post).status, 501);
  HttpRequest metrics;
  metrics.method = "GET";
  metrics.path = "/metrics";
  EXPECT_EQ(api.Handle(metrics).status, 404);  // None given.
  HttpRequest runs;
  runs.method = "GET";
  runs.path = "/api/v1/runs";
  EXPECT_EQ(api.Handle(runs).status, 200);  // No authenticator: open.
}

TEST_F(JsonApiTest, ServesTheDashboardWithoutATokenAndNoForeignSources) {
  HttpResponse page = Get("/", {}, "");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_THAT(page.body, HasSubstr("<script src=\"/static/chart.min.js\">"));
  EXPECT_THAT(page.extra_headers,
              HasSubstr("Content-Security-Policy: default-src 'self'"));
  HttpResponse chart = Get("/static/chart.min.js", {}, "");
  EXPECT_EQ(chart.status, 200);
  EXPECT_THAT(chart.body, HasSubstr("Chart.js v3"));
  EXPECT_EQ(Get("/static/dashboard.js", {}, "").status, 200);
  EXPECT_EQ(Get("/static/dashboard.css", {}, "").status, 200);
  // The data still needs the token.
  EXPECT_EQ(Get("/api/v1/runs", {}, "").status, 401);
  EXPECT_EQ(Get("/static/missing.js", {}, "").status, 401);
}

TEST_F(JsonApiTest, EventsStreamTheRunsRoundsAfterLastEventId) {
  HttpRequest request;
  request.method = "GET";
  request.path = "/api/v1/runs/r/events";
  request.authorization = "Bearer viewer-token-0123456789";
  request.last_event_id = "2";
  JsonApi api(aggregator_.get(), auth_.get());
  HttpResponse response = api.Handle(request);
  ASSERT_TRUE(response.stream);
  EXPECT_EQ(response.content_type, "text/event-stream");
  EXPECT_EQ(Get("/api/v1/runs/nope/events").status, 404);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
