// A run's finalized rounds as Server-Sent Events, for live dashboards:
//
//   GET /api/v1/runs/RUN/events?from=S
//
//   retry: 2000
//
//   id: 41
//   event: round
//   data: {"run_id":"r","step":41,"total_norm":1.25,...}   (a RoundResult)
//
//   : keepalive                     (every `keepalive` without a round)
//
//   event: end
//   data: {"code":"OUT_OF_RANGE","message":"run r is finished ..."}
//
// First the rounds already finalized with step >= S (in step order), then
// each round as it is finalized. The stream ends with an `end` event when
// the run is finished and every round was sent (OUT_OF_RANGE), when it is
// deleted (NOT_FOUND) or when the coordinator stops (UNAVAILABLE). An
// EventSource that reconnects sends Last-Event-ID, and the stream resumes
// after that step. Each event's id is its step.
//
//   HttpResponse response = RoundEvents(aggregator, "r", 0, absl::Seconds(15));
//
// Thread-safety: RoundEvents may be called from any thread; the response's
// stream runs on the caller's (HTTP worker) thread.
#ifndef GRADNORM_SERVER_HTTP_ROUND_EVENTS_H_
#define GRADNORM_SERVER_HTTP_ROUND_EVENTS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "server/core/aggregator.h"
#include "server/http/http_message.h"

namespace gradnorm {
namespace server {

// The event stream of `run_id` from `from_step` on, or the error response of
// the watch (NOT_FOUND for an unknown run, UNAVAILABLE while stopping).
// `aggregator` must outlive the response.
HttpResponse RoundEvents(Aggregator* aggregator, const std::string& run_id,
                         uint64_t from_step, absl::Duration keepalive);

// One event of the stream (exposed for tests): a round, or the end.
std::string RoundEvent(const v1::RoundResult& round);
std::string EndEvent(const absl::Status& why);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_HTTP_ROUND_EVENTS_H_
