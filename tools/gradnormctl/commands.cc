#include "tools/gradnormctl/commands.h"

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <optional>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "tools/gradnormctl/flags.h"
#include "tools/gradnormctl/output.h"
#include "tools/gradnormctl/parity.h"
#include "tools/gradnormctl/plot.h"
#include "tools/gradnormctl/tensorboard.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

absl::Time Deadline() {
  return absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout));
}

// The bearer token, when there is one.
void Authorize(grpc::ClientContext* context, const std::string& token) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

int Fail(const grpc::Status& status, const std::string& call) {
  std::cerr << "gradnormctl: " << call << " failed: "
            << absl::StatusCodeToString(
                   static_cast<absl::StatusCode>(status.error_code()))
            << ": " << status.error_message() << "\n";
  return 1;
}

// Waits until `channel` is connected or has failed to connect (then the call
// that follows fails at once with gRPC's own UNAVAILABLE and its reason);
// DEADLINE_EXCEEDED when it is still connecting at `deadline`.
grpc::Status AwaitConnection(grpc::Channel& channel,
                             absl::Time deadline = Deadline()) {
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY &&
         state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         state != GRPC_CHANNEL_SHUTDOWN) {
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) {
      return grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat(
              "no connection to ", absl::GetFlag(FLAGS_target),
              " within --timeout ", absl::GetFlag(FLAGS_timeout),
              " s (still connecting); expected a reachable coordinator"));
    }
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return grpc::Status::OK;
}

// Whether a call that a coordinator answered UNAVAILABLE is made again.
enum class Retry {
  // Until --timeout: reads, and registering and finishing (idempotent).
  kWhileReachable,
  // Never: a health check reports what it got; a delete whose answer was
  // lost would be answered NOT_FOUND.
  kNever,
};

// One unary call of `rpc` over `channel` with the token, bounded by
// --timeout. UNAVAILABLE from a coordinator that can still be reached (a
// replica while the coordinator holding the database changes; one of the
// target's coordinators going away) is retried with `retry`, after 0.1 s,
// 0.2 s ... 1 s, until the deadline. When no coordinator of the target can be
// reached, or on any other error, the call fails at once with its reason.
template <typename Stub, typename Request, typename Response>
grpc::Status Invoke(const std::shared_ptr<grpc::Channel>& channel,
                    grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                              const Request&, Response*),
                    const std::string& token, const Request& request,
                    Response* response, Retry retry = Retry::kWhileReachable) {
  Stub stub(channel);
  const absl::Time deadline = Deadline();
  absl::Duration wait = absl::Milliseconds(100);
  for (;;) {
    grpc::ClientContext context;
    Authorize(&context, token);
    context.set_deadline(absl::ToChronoTime(deadline));
    grpc::Status status = (stub.*rpc)(&context, request, response);
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE ||
        retry == Retry::kNever || absl::Now() + wait >= deadline ||
        !AwaitConnection(*channel, deadline).ok() ||
        channel->GetState(false) != GRPC_CHANNEL_READY) {
      return status;
    }
    absl::SleepFor(wait);
    wait = std::min(2 * wait, absl::Seconds(1));
  }
}

// Invoke, then the command's end when it has one: a failure printed (exit
// 1), or with --json the response printed (exit 0). nullopt: the caller
// prints its table.
template <typename Stub, typename Request, typename Response>
std::optional<int> CallOrPrintJson(
    const char* name, const std::shared_ptr<grpc::Channel>& channel,
    grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
    const std::string& token, const Request& request, Response* response,
    Retry retry = Retry::kWhileReachable) {
  grpc::Status status = Invoke(channel, rpc, token, request, response, retry);
  if (!status.ok()) return Fail(status, name);
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(*response);
    return 0;
  }
  return std::nullopt;
}

}  // namespace

int Runs(const std::shared_ptr<grpc::Channel>& channel,
         const std::string& token) {
  gradnorm::v1::ListRunsResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("ListRuns", channel, &Coordinator::Stub::ListRuns,
                          token, gradnorm::v1::ListRunsRequest(), &response)) {
    return *done;
  }
  Table table(kRunHeader);
  for (const auto& run : response.runs()) table.Add(RunRow(run));
  table.Print(std::cout);
  return 0;
}

int Run(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
        const std::string& run_id) {
  gradnorm::v1::GetRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::GetRunResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("GetRun", channel, &Coordinator::Stub::GetRun, token,
                          request, &response)) {
    return *done;
  }
  PrintRun(response.run());
  return 0;
}

int History(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& token, const std::string& run_id) {
  gradnorm::v1::GetHistoryRequest request;
  request.set_run_id(run_id);
  request.set_from_step(absl::GetFlag(FLAGS_from));
  request.set_to_step(absl::GetFlag(FLAGS_to));
  request.set_max_points(absl::GetFlag(FLAGS_points));
  gradnorm::v1::GetHistoryResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("GetHistory", channel, &Coordinator::Stub::GetHistory,
                          token, request, &response)) {
    return *done;
  }
  Table table({"FIRST_STEP", "LAST_STEP", "ROUNDS", "MIN", "MEAN", "MAX",
               "LAST", "CLIPPED", "SKIPPED", "MAX_SPREAD_S"});
  for (const auto& b : response.buckets()) {
    table.Add({absl::StrCat(b.first_step()), absl::StrCat(b.last_step()),
               absl::StrCat(b.rounds()), Num(b.min_norm()), Num(b.mean_norm()),
               Num(b.max_norm()), Num(b.last_norm()), absl::StrCat(b.clipped()),
               absl::StrCat(b.skipped()), Num(b.max_arrival_spread_seconds())});
  }
  table.Print(std::cout);
  return 0;
}

int Plot(const std::shared_ptr<grpc::Channel>& channel,
         const std::string& token, const std::string& run_id) {
  // The run's max_norm, for the threshold line: it does not change.
  gradnorm::v1::GetRunRequest get;
  get.set_run_id(run_id);
  gradnorm::v1::GetRunResponse run;
  grpc::Status status =
      Invoke(channel, &Coordinator::Stub::GetRun, token, get, &run);
  if (!status.ok()) return Fail(status, "GetRun");
  while (true) {
    int columns = 0, lines = 0;
    TerminalSize(&columns, &lines);
    PlotOptions options;
    options.width = absl::GetFlag(FLAGS_width) > 0
                        ? static_cast<int>(absl::GetFlag(FLAGS_width))
                        : columns;
    options.height = absl::GetFlag(FLAGS_height) > 0
                         ? static_cast<int>(absl::GetFlag(FLAGS_height))
                         : std::max(3, lines - 6);
    options.max_norm = run.run().config().max_norm();
    gradnorm::v1::GetHistoryRequest request;
    request.set_run_id(run_id);
    request.set_from_step(absl::GetFlag(FLAGS_from));
    request.set_to_step(absl::GetFlag(FLAGS_to));
    request.set_max_points(PlotColumns(options.width));
    gradnorm::v1::GetHistoryResponse response;
    status = Invoke(channel, &Coordinator::Stub::GetHistory, token, request,
                    &response);
    if (!status.ok()) return Fail(status, "GetHistory");
    uint64_t rounds = 0;
    for (const auto& b : response.buckets()) rounds += b.rounds();
    // --watch: clear the screen and draw from its top each time.
    if (absl::GetFlag(FLAGS_watch)) std::cout << "\x1b[H\x1b[2J";
    std::cout << "run " << run_id << ": " << rounds << " rounds"
              << (response.downsampled() ? ", downsampled" : "") << "\n"
              << RenderPlot(response, options);
    std::cout.flush();
    if (!absl::GetFlag(FLAGS_watch)) return 0;
    absl::SleepFor(absl::Seconds(1));
  }
}

int Summary(const std::shared_ptr<grpc::Channel>& channel,
            const std::string& token, const std::string& run_id) {
  gradnorm::v1::GetSummaryRequest request;
  request.set_run_id(run_id);
  request.set_from_step(absl::GetFlag(FLAGS_from));
  request.set_to_step(absl::GetFlag(FLAGS_to));
  request.set_top_slowest(absl::GetFlag(FLAGS_top));
  gradnorm::v1::GetSummaryResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("GetSummary", channel, &Coordinator::Stub::GetSummary,
                          token, request, &response)) {
    return *done;
  }
  Table table({"STAT", "VALUE"});
  table.Add({"rounds", absl::StrCat(response.rounds())});
  table.Add({"p50_total_norm", Num(response.p50_norm())});
  table.Add({"p90_total_norm", Num(response.p90_norm())});
  table.Add({"p99_total_norm", Num(response.p99_norm())});
  table.Add({"min_total_norm", Num(response.min_norm())});
  table.Add({"mean_total_norm", Num(response.mean_norm())});
  // The largest observed total norm, not the run's max_norm threshold.
  table.Add({"max_total_norm", Num(response.max_norm())});
  table.Add({"clipped_fraction", Num(response.clipped_fraction())});
  table.Add({"skipped_count", absl::StrCat(response.skipped_count())});
  std::vector<std::string> skipped;
  for (uint64_t step : response.skipped_steps())
    skipped.push_back(absl::StrCat(step));
  table.Add(
      {"skipped_steps", skipped.empty() ? "-" : absl::StrJoin(skipped, ",")});
  table.Print(std::cout);
  if (response.slowest_participants_size() > 0) {
    std::cout << "\n";
    Table lag({"PARTICIPANT", "TIMES_SLOWEST", "MEAN_LAG_S", "MAX_LAG_S"});
    for (const auto& p : response.slowest_participants()) {
      lag.Add({absl::StrCat(p.participant()), absl::StrCat(p.times_slowest()),
               Num(p.mean_lag_seconds()), Num(p.max_lag_seconds())});
    }
    lag.Print(std::cout);
  }
  return 0;
}

int Watch(const std::shared_ptr<grpc::Channel>& channel,
          const std::string& token, const std::string& run_id) {
  // The stream has no deadline (it follows the run until interrupted), so
  // --timeout bounds connecting instead of waiting out gRPC's own connect
  // timeout and backoff.
  grpc::Status connected = AwaitConnection(*channel);
  if (!connected.ok()) return Fail(connected, "WatchRun");
  auto stub = Coordinator::NewStub(channel);
  // A run that is not registered yet (watch started before the trainers):
  // wait for it, saying so once, rather than fail.
  for (bool told = false;;) {
    gradnorm::v1::GetRunRequest get;
    get.set_run_id(run_id);
    gradnorm::v1::GetRunResponse run;
    grpc::Status found =
        Invoke(channel, &Coordinator::Stub::GetRun, token, get, &run);
    if (found.ok()) break;
    if (found.error_code() != grpc::StatusCode::NOT_FOUND) {
      return Fail(found, "GetRun");
    }
    if (!told) {
      std::cerr << "gradnormctl: run " << run_id
                << " is not registered yet; waiting for it\n";
      told = true;
    }
    absl::SleepFor(absl::Milliseconds(200));
  }
  grpc::ClientContext context;
  Authorize(&context, token);
  gradnorm::v1::WatchRunRequest request;
  request.set_run_id(run_id);
  request.set_from_step(absl::GetFlag(FLAGS_from));
  auto reader = stub->WatchRun(&context, request);
  const bool json = absl::GetFlag(FLAGS_json);
  // Rows stream as rounds finalize, so widths are fixed rather than measured.
  const char* kRowFormat = "%10s  %14s  %10s  %6s  %-15s  %10s  %7s\n";
  if (!json) {
    std::cout << absl::StrFormat(kRowFormat, "STEP", "TOTAL_NORM", "CLIP_COEF",
                                 "ACTION", "REASON", "SPREAD_S", "SLOWEST");
    std::cout.flush();
  }
  gradnorm::v1::RoundResult round;
  while (reader->Read(&round)) {
    if (json) {
      PrintJson(round, /*multiline=*/false);
    } else {
      std::cout << absl::StrFormat(
          kRowFormat, absl::StrCat(round.step()), Num(round.total_norm()),
          Num(round.clip_coef()), ActionName(round.action()),
          ReasonName(round.reason()), Num(round.arrival_spread_seconds()),
          absl::StrCat(round.slowest_participant()));
    }
    std::cout.flush();
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail(status, "WatchRun");
  // The coordinator ends the stream by itself only for a finished run.
  std::cerr << "gradnormctl: run " << run_id << " is finished\n";
  return 0;
}

grpc::Status ReadStoredRounds(const std::shared_ptr<grpc::Channel>& channel,
                              const std::string& token,
                              const gradnorm::v1::RunInfo& run, uint64_t from,
                              std::vector<gradnorm::v1::RoundResult>* rounds) {
  // A watch replays the stored rounds in step order: read up to the last step
  // finalized now, then leave (a live run would stream on).
  if (run.rounds() == 0 || run.last_step() < from) return grpc::Status::OK;
  grpc::ClientContext context;
  Authorize(&context, token);
  gradnorm::v1::WatchRunRequest request;
  request.set_run_id(run.run_id());
  request.set_from_step(from);
  auto reader = Coordinator::NewStub(channel)->WatchRun(&context, request);
  gradnorm::v1::RoundResult round;
  while (reader->Read(&round)) {
    const uint64_t step = round.step();
    rounds->push_back(round);
    if (step >= run.last_step()) break;
  }
  context.TryCancel();
  grpc::Status status = reader->Finish();
  return status.error_code() == grpc::StatusCode::CANCELLED ? grpc::Status::OK
                                                            : status;
}

int Parity(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_a,
           const std::string& run_b) {
  std::vector<gradnorm::v1::RoundResult> rounds[2];
  const std::string ids[2] = {run_a, run_b};
  bool exact[2] = {true, true};
  for (int i = 0; i < 2; ++i) {
    gradnorm::v1::GetRunRequest get;
    get.set_run_id(ids[i]);
    gradnorm::v1::GetRunResponse run;
    grpc::Status status =
        Invoke(channel, &Coordinator::Stub::GetRun, token, get, &run);
    if (!status.ok()) return Fail(status, "GetRun");
    status = ReadStoredRounds(channel, token, run.run(),
                              absl::GetFlag(FLAGS_from), &rounds[i]);
    if (!status.ok()) return Fail(status, "WatchRun");
    for (const auto& r : rounds[i]) exact[i] = exact[i] && r.exact();
  }
  const ParityReport report = CompareTotals(rounds[0], rounds[1]);
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ParityJson(report, run_a, run_b) << "\n";
  } else {
    std::cout << ParityText(report, run_a, run_b) << "\n";
    for (int i = 0; i < 2; ++i) {
      if (!exact[i] && !rounds[i].empty()) {
        std::cout << "note: run " << ids[i]
                  << " has totals that are not exact (a job reported only a "
                     "double partial): they may differ in their last bits "
                     "under another layout\n";
      }
    }
  }
  return report.equal() ? 0 : 1;
}

int ExportTensorBoard(const std::shared_ptr<grpc::Channel>& channel,
                      const std::string& token, const std::string& run_id,
                      const std::string& dir) {
  gradnorm::v1::GetRunRequest get;
  get.set_run_id(run_id);
  gradnorm::v1::GetRunResponse run;
  grpc::Status status =
      Invoke(channel, &Coordinator::Stub::GetRun, token, get, &run);
  if (!status.ok()) return Fail(status, "GetRun");
  std::vector<gradnorm::v1::RoundResult> rounds;
  status = ReadStoredRounds(channel, token, run.run(),
                            absl::GetFlag(FLAGS_from), &rounds);
  if (!status.ok()) return Fail(status, "WatchRun");
  absl::StatusOr<std::string> path =
      WriteTensorBoardEvents(rounds, dir, run_id);
  if (!path.ok()) {
    std::cerr << "gradnormctl: " << path.status().ToString() << "\n";
    return 1;
  }
  std::cout << "wrote " << rounds.size() << " steps of run " << run_id << " to "
            << *path << "\n";
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token) {
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = Invoke(channel, &grpc::health::v1::Health::Stub::Check,
                               token, request, &response, Retry::kNever);
  if (!status.ok()) return Fail(status, "Health.Check");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
  } else {
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                     response.status())
              << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING
             ? 0
             : 1;
}

int Register(const std::shared_ptr<grpc::Channel>& channel,
             const std::string& token, const std::string& run_id,
             const gradnorm::v1::RunConfig& config) {
  gradnorm::v1::RegisterRunRequest request;
  request.set_run_id(run_id);
  *request.mutable_config() = config;
  gradnorm::v1::RegisterRunResponse response;
  if (std::optional<int> done = CallOrPrintJson("RegisterRun", channel,
                                                &Coordinator::Stub::RegisterRun,
                                                token, request, &response)) {
    return *done;
  }
  std::cout << (response.created() ? "registered run "
                                   : "run already registered: ")
            << run_id << "\n";
  PrintRun(response.run());
  return 0;
}

int Finish(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_id) {
  gradnorm::v1::FinishRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::FinishRunResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("FinishRun", channel, &Coordinator::Stub::FinishRun,
                          token, request, &response)) {
    return *done;
  }
  std::cout << "finished run " << run_id;
  if (response.abandoned_rounds() > 0) {
    std::cout << " (" << response.abandoned_rounds()
              << " rounds waiting for participants were abandoned)";
  }
  std::cout << "\n";
  PrintRun(response.run());
  return 0;
}

int Delete(const std::shared_ptr<grpc::Channel>& channel,
           const std::string& token, const std::string& run_id) {
  gradnorm::v1::DeleteRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::DeleteRunResponse response;
  if (std::optional<int> done =
          CallOrPrintJson("DeleteRun", channel, &Coordinator::Stub::DeleteRun,
                          token, request, &response, Retry::kNever)) {
    return *done;
  }
  std::cout << "deleted run " << run_id << " and its " << response.rounds()
            << " rounds\n";
  return 0;
}

}  // namespace gradnormctl
}  // namespace gradnorm
