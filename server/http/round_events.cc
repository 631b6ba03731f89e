#include "server/http/round_events.h"

#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/http/http_error.h"
#include "server/http/proto_json.h"

namespace gradnorm {
namespace server {

std::string RoundEvent(const v1::RoundResult& round) {
  return absl::StrCat("id: ", round.step(),
                      "\nevent: round\ndata: ", ToJson(round), "\n\n");
}

std::string EndEvent(const absl::Status& why) {
  return absl::StrCat("event: end\ndata: ", ErrorResponse(why).body, "\n\n");
}

HttpResponse RoundEvents(Aggregator* aggregator, const std::string& run_id,
                         uint64_t from_step, absl::Duration keepalive) {
  auto signal = std::make_shared<StreamSignal>();
  absl::StatusOr<std::unique_ptr<RoundWatch>> watch =
      aggregator->Watch(run_id, from_step, [signal] { signal->Notify(); });
  if (!watch.ok()) return ErrorResponse(watch.status());
  HttpResponse response;
  response.content_type = "text/event-stream";
  response.signal = signal;
  std::shared_ptr<RoundWatch> rounds = *std::move(watch);
  response.stream = [rounds, keepalive](ResponseWriter& out,
                                        StreamSignal& wake) {
    // Browsers reconnect after this many milliseconds if the stream drops.
    if (!out.Write("retry: 2000\n\n")) return;
    while (true) {
      while (true) {
        absl::StatusOr<std::optional<v1::RoundResult>> next = rounds->Next();
        if (!next.ok()) {
          out.Write(EndEvent(next.status()));
          return;
        }
        if (!next->has_value()) break;
        if (!out.Write(RoundEvent(**next))) return;
      }
      switch (wake.WaitFor(keepalive)) {
        case StreamSignal::kCancelled:
          out.Write(EndEvent(
              absl::UnavailableError("the coordinator's HTTP port is "
                                     "stopping; reconnect to resume")));
          return;
        case StreamSignal::kTimedOut:
          // Finds a client that left, and keeps proxies from closing.
          if (!out.Write(": keepalive\n\n")) return;
          break;
        case StreamSignal::kNotified:
          break;
      }
    }
  };
  return response;
}

}  // namespace server
}  // namespace gradnorm
