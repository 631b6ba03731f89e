// The coordinator's HTTP API: the queries of the gRPC service as JSON
// (proto_json.h), and Prometheus metrics, for dashboards and scripts.
//
//   GET /                                  the dashboard page (dashboard/), and
//   GET /static/...                        its script, style and chart library
//                                          (no token needed: they hold no data)
//   GET /api/v1/runs                       ListRunsResponse
//   GET /api/v1/runs/RUN                   GetRunResponse (config and state)
//   GET /api/v1/runs/RUN/history?from=S&to=S&buckets=N
//                                          GetHistoryResponse: N buckets at
//                                          most (0 or absent: one per round),
//                                          each min/max/mean/last, clipped and
//                                          skipped counts, first/last times
//   GET /api/v1/runs/RUN/summary?from=S&to=S&top=N
//                                          GetSummaryResponse
//   GET /api/v1/runs/RUN/rounds?from=S&to=S&limit=N[&format=csv]
//                                          a page of finalized rounds in step
//                                          order: {"rounds":[RoundResult...],
//                                          "next_from":S} (null after the last
//                                          page); limit 1 to 10000 (1000); CSV:
//                                          a header line and one line a round
//   GET /api/v1/runs/RUN/events?from=S     the run's finalized rounds from
//                                          step S on, live, as Server-Sent
//                                          Events (round_events.h)
//   GET /metrics                           Prometheus text format
//
// Every request carries "Authorization: Bearer TOKEN" of role viewer or
// better when the coordinator has a tokens file (auth.h), as gRPC calls do.
// Errors answer with the HTTP status of their code and
// {"code":"NOT_FOUND","message":"..."}.
//
//   JsonApi api(aggregator, authenticator, metrics);
//   HttpResponse response = api.Handle(request);
//
// Thread-safety: Handle may be called from any number of threads.
#ifndef GRADNORM_SERVER_HTTP_JSON_API_H_
#define GRADNORM_SERVER_HTTP_JSON_API_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "server/core/aggregator.h"
#include "server/http/http_error.h"
#include "server/http/http_message.h"
#include "server/rpc/auth.h"

namespace gradnorm {
namespace server {

class JsonApi {
 public:
  // `auth` may be null (no authentication). `metrics_text` returns the
  // Prometheus exposition of the coordinator's metrics; empty: /metrics is
  // NOT_FOUND. An event stream without rounds sends a comment every
  // `keepalive`. None is owned.
  JsonApi(Aggregator* aggregator, const TokenAuthenticator* auth,
          std::function<std::string()> metrics_text = nullptr,
          absl::Duration keepalive = absl::Seconds(15))
      : aggregator_(aggregator),
        auth_(auth),
        metrics_text_(std::move(metrics_text)),
        keepalive_(keepalive) {}

  HttpResponse Handle(const HttpRequest& request) const;

 private:
  HttpResponse HandleRun(const HttpRequest& request,
                         const std::string& rest) const;
  HttpResponse Rounds(const HttpRequest& request, const std::string& run_id,
                      uint64_t from, uint64_t to) const;

  Aggregator* const aggregator_;
  const TokenAuthenticator* const auth_;
  const std::function<std::string()> metrics_text_;
  const absl::Duration keepalive_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_JSON_API_H_
