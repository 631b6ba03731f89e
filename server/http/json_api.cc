#include "server/http/json_api.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/core/number_format.h"
#include "server/http/dashboard/assets.h"
#include "server/http/proto_json.h"
#include "server/http/round_events.h"

namespace gradnorm {
namespace server {
namespace {

constexpr absl::string_view kRunsPrefix = "/api/v1/runs";

HttpResponse Json(const google::protobuf::Message& message) {
  HttpResponse response;
  response.body = ToJson(message);
  return response;
}

// The query parameter `name` as an unsigned integer; `fallback` when absent.
absl::StatusOr<uint64_t> UintParam(const HttpRequest& request,
                                   const std::string& name, uint64_t fallback,
                                   uint64_t max) {
  auto it = request.query.find(name);
  if (it == request.query.end() || it->second.empty()) return fallback;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(it->second, &value) || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("query parameter ", name, "=", it->second,
                     " is invalid; expected an integer from 0 to ", max));
  }
  return value;
}

constexpr uint64_t kDefaultPage = 1000;
constexpr uint64_t kMaxPage = 10000;

constexpr char kCsvHeader[] =
    "step,total_norm,clip_coef,action,reason,effective_max_norm,"
    "arrival_spread_seconds,slowest_participant,finalized_unix_micros\n";

void AppendCsv(const v1::RoundResult& r, std::string* out) {
  absl::StrAppend(
      out, r.step(), ",", FormatNumber(r.total_norm()), ",",
      FormatNumber(r.clip_coef()), ",", v1::Action_Name(r.action()), ",",
      v1::Reason_Name(r.reason()), ",", FormatNumber(r.effective_max_norm()),
      ",", FormatNumber(r.arrival_spread_seconds()), ",",
      r.slowest_participant(), ",", r.finalized_unix_micros(), "\n");
}

}  // namespace

HttpResponse JsonApi::Rounds(const HttpRequest& request,
                             const std::string& run_id, uint64_t from,
                             uint64_t to) const {
  absl::StatusOr<uint64_t> limit =
      UintParam(request, "limit", kDefaultPage, kMaxPage);
  if (!limit.ok()) return ErrorResponse(limit.status());
  auto format = request.query.find("format");
  const bool csv = format != request.query.end() && format->second == "csv";
  if (format != request.query.end() && !csv && format->second != "json") {
    return ErrorResponse(absl::InvalidArgumentError(
        absl::StrCat("format=", format->second,
                     " is unknown; expected json (the default) or csv")));
  }
  absl::StatusOr<std::vector<v1::RoundResult>> rounds =
      aggregator_->GetRounds(run_id, from, to, static_cast<uint32_t>(*limit));
  if (!rounds.ok()) return ErrorResponse(rounds.status());
  HttpResponse response;
  if (csv) {
    response.content_type = "text/csv";
    response.body = kCsvHeader;
    for (const v1::RoundResult& round : *rounds) {
      AppendCsv(round, &response.body);
    }
    return response;
  }
  response.body = "{\"rounds\":[";
  for (size_t i = 0; i < rounds->size(); ++i) {
    if (i > 0) response.body.push_back(',');
    response.body += ToJson((*rounds)[i]);
  }
  // A full page may have more after it; a short one is the last.
  const bool more = rounds->size() == *limit &&
                    rounds->back().step() < UINT64_MAX &&
                    (to == 0 || rounds->back().step() < to);
  absl::StrAppend(&response.body, "],\"next_from\":",
                  more ? absl::StrCat(rounds->back().step() + 1) : "null", "}");
  return response;
}

HttpResponse JsonApi::Handle(const HttpRequest& request) const {
  if (request.method != "GET") {
    return ErrorResponse(absl::UnimplementedError(
        absl::StrCat(request.method, " ", request.path,
                     ": the HTTP API is read-only; expected GET")));
  }
  // The dashboard's files hold no data: they load without a token, and the
  // page then asks for one.
  if (const DashboardAsset* asset = FindDashboardAsset(request.path)) {
    HttpResponse response;
    response.content_type = std::string(asset->content_type);
    response.body = std::string(asset->body);
    response.extra_headers =
        "Content-Security-Policy: default-src 'self'; img-src 'self' data:\r\n"
        "X-Content-Type-Options: nosniff\r\n";
    return response;
  }
  if (auth_ != nullptr) {
    absl::Status allowed =
        auth_->Authorize(request.authorization, Permission::kQuery);
    if (!allowed.ok()) return ErrorResponse(allowed);
  }
  if (request.path == "/metrics") {
    if (!metrics_text_) {
      return ErrorResponse(
          absl::NotFoundError("/metrics: this coordinator serves no metrics"));
    }
    HttpResponse response;
    response.content_type = "text/plain; version=0.0.4";
    response.body = metrics_text_();
    return response;
  }
  absl::string_view path = request.path;
  if (path == kRunsPrefix || path == absl::StrCat(kRunsPrefix, "/")) {
    return Json(aggregator_->ListRuns());
  }
  if (absl::ConsumePrefix(&path, kRunsPrefix) &&
      absl::ConsumePrefix(&path, "/")) {
    return HandleRun(request, std::string(path));
  }
  return ErrorResponse(absl::NotFoundError(absl::StrCat(
      request.path,
      " is not an endpoint; expected / (the dashboard), /api/v1/runs, "
      "/api/v1/runs/RUN, "
      "/api/v1/runs/RUN/history, /api/v1/runs/RUN/summary, "
      "/api/v1/runs/RUN/rounds, /api/v1/runs/RUN/events or /metrics")));
}

HttpResponse JsonApi::HandleRun(const HttpRequest& request,
                                const std::string& rest) const {
  const size_t slash = rest.find('/');
  const std::string run_id = rest.substr(0, slash);
  const std::string what =
      slash == std::string::npos ? "" : rest.substr(slash + 1);
  absl::StatusOr<uint64_t> from = UintParam(request, "from", 0, UINT64_MAX);
  absl::StatusOr<uint64_t> to = UintParam(request, "to", 0, UINT64_MAX);
  if (!from.ok()) return ErrorResponse(from.status());
  if (!to.ok()) return ErrorResponse(to.status());
  if (what.empty()) {
    absl::StatusOr<v1::RunInfo> run = aggregator_->GetRun(run_id);
    if (!run.ok()) return ErrorResponse(run.status());
    v1::GetRunResponse response;
    *response.mutable_run() = *std::move(run);
    return Json(response);
  }
  if (what == "history") {
    absl::StatusOr<uint64_t> buckets =
        UintParam(request, "buckets", 0, UINT32_MAX);
    if (!buckets.ok()) return ErrorResponse(buckets.status());
    v1::GetHistoryRequest query;
    query.set_run_id(run_id);
    query.set_from_step(*from);
    query.set_to_step(*to);
    query.set_max_points(static_cast<uint32_t>(*buckets));
    absl::StatusOr<v1::GetHistoryResponse> history =
        aggregator_->GetHistory(query);
    if (!history.ok()) return ErrorResponse(history.status());
    return Json(*history);
  }
  if (what == "summary") {
    absl::StatusOr<uint64_t> top = UintParam(request, "top", 0, UINT32_MAX);
    if (!top.ok()) return ErrorResponse(top.status());
    v1::GetSummaryRequest query;
    query.set_run_id(run_id);
    query.set_from_step(*from);
    query.set_to_step(*to);
    query.set_top_slowest(static_cast<uint32_t>(*top));
    absl::StatusOr<v1::GetSummaryResponse> summary =
        aggregator_->GetSummary(query);
    if (!summary.ok()) return ErrorResponse(summary.status());
    return Json(*summary);
  }
  if (what == "rounds") return Rounds(request, run_id, *from, *to);
  if (what == "events") {
    uint64_t start = *from;
    // A reconnecting EventSource resumes after the last step it saw.
    uint64_t last_seen = 0;
    if (!request.last_event_id.empty() &&
        absl::SimpleAtoi(request.last_event_id, &last_seen) &&
        last_seen < UINT64_MAX) {
      start = std::max(start, last_seen + 1);
    }
    return RoundEvents(aggregator_, run_id, start, keepalive_);
  }
  return ErrorResponse(absl::NotFoundError(absl::StrCat(
      request.path, " is not an endpoint; expected /api/v1/runs/", run_id,
      ", .../history, .../summary, .../rounds or .../events")));
}

}  // namespace server
}  // namespace gradnorm
