// The coordinator's HTTP API: the queries of the gRPC service as JSON
// (proto_json.h), and Prometheus metrics, for dashboards and scripts.
//
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
#include <map>
#include <string>

#include "absl/status/status.h"
#include "server/core/aggregator.h"
#include "server/rpc/auth.h"

namespace gradnorm {
namespace server {

struct HttpRequest {
  std::string method;  // "GET"
  std::string path;    // URL-decoded, without the query
  // Query parameters, URL-decoded.
  std::map<std::string, std::string> query;
  // The Authorization header's value ("" when absent).
  std::string authorization;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

// The HTTP status of an absl::StatusCode (OK 200, INVALID_ARGUMENT 400,
// UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404, ...).
int HttpStatusOf(absl::StatusCode code);

// {"code":"NOT_FOUND","message":"..."} with HttpStatusOf(status.code()).
HttpResponse ErrorResponse(const absl::Status& status);

class JsonApi {
 public:
  // `auth` may be null (no authentication). `metrics_text` returns the
  // Prometheus exposition of the coordinator's metrics; empty: /metrics is
  // NOT_FOUND. None is owned.
  JsonApi(Aggregator* aggregator, const TokenAuthenticator* auth,
          std::function<std::string()> metrics_text = nullptr)
      : aggregator_(aggregator),
        auth_(auth),
        metrics_text_(std::move(metrics_text)) {}

  HttpResponse Handle(const HttpRequest& request) const;

 private:
  HttpResponse HandleRun(const HttpRequest& request,
                         const std::string& rest) const;
  HttpResponse Rounds(const HttpRequest& request, const std::string& run_id,
                      uint64_t from, uint64_t to) const;

  Aggregator* const aggregator_;
  const TokenAuthenticator* const auth_;
  const std::function<std::string()> metrics_text_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_JSON_API_H_
