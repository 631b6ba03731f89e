// gradnormctl: command-line client of the gradnorm coordinator.
//
//   gradnormctl [flags] runs                 list runs
//   gradnormctl [flags] run RUN              describe one run
//   gradnormctl [flags] history RUN [--from=S --to=S --points=N]
//   gradnormctl [flags] summary RUN [--from=S --to=S --top=N]   (N >= 1)
//   gradnormctl [flags] watch RUN [--from=S] stream finalized rounds (waits
//                                            for a run not registered yet)
//   gradnormctl [flags] health [--service=NAME]
//   gradnormctl [flags] register RUN --participants=N [--norm_type=P
//       --max_norm=X --policy=static|autoclip|zclip --autoclip_percentile=Q
//       --autoclip_history=N --zclip_alpha=A --zclip_z=Z --warmup_steps=N
//       --spike_sigma=S --spike_window=N --spike_warmup=N
//       --nonfinite=skip|error --round_timeout_ms=T]
//                                            register a run (every policy)
//   gradnormctl [flags] finish RUN           the run is over: no new rounds,
//                                            watches end (role trainer)
//   gradnormctl [flags] delete RUN           delete the run and its history
//                                            (role admin)
//
// --help lists the flags and exits 0; --version prints the version.
// Output is an aligned table by default, the proto3 JSON mapping with --json
// (proto field names, e.g. total_norm; `watch --json` prints one object per
// line). Connection: --target (host:port), --tls_ca (verify the server; turns
// on TLS), --tls_cert/--tls_key (client certificate for mutual TLS),
// --token or --token_file (bearer token); the environment variables
// GRADNORM_TARGET and GRADNORM_TOKEN_FILE stand for --target and
// --token_file when those are not given. --timeout bounds each RPC; `watch`
// runs until interrupted, so there it bounds connecting only: a channel that
// is not connected within --timeout fails with DEADLINE_EXCEEDED. Exit
// status: 0 on success, 1 when the RPC failed (its code and message are
// printed on stderr), 2 on usage errors (including --top < 1, a --timeout
// that is not a positive number of seconds, and register settings that are
// not understood); `health` exits 1 unless the server is SERVING. register
// leaves unset numbers at the coordinator's defaults (coordinator.proto), and
// the coordinator checks the values; registering again with the same
// settings is a no-op, with others FAILED_PRECONDITION.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <utility>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "gradnorm/v1/coordinator.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Coordinator address, host:port");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA bundle that signs the coordinator's certificate; turns on TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the server certificate (default: the target host)");
ABSL_FLAG(std::string, token, "", "Bearer token (prefer --token_file)");
ABSL_FLAG(std::string, token_file, "", "File whose first line is the bearer token");
ABSL_FLAG(bool, json, false, "Print the proto3 JSON mapping instead of tables");
ABSL_FLAG(uint64_t, from, 0, "history/summary/watch: first step, inclusive");
ABSL_FLAG(uint64_t, to, 0, "history/summary: last step, inclusive (0: latest)");
ABSL_FLAG(uint32_t, points, 0, "history: at most this many buckets (0: every round)");
ABSL_FLAG(uint32_t, top, 5, "summary: how many slowest participants to list (>= 1)");
ABSL_FLAG(std::string, service, "", "health: service name ('' = whole server)");
ABSL_FLAG(uint32_t, participants, 0, "register: number of jobs that report every step (>= 1)");
ABSL_FLAG(std::string, norm_type, "2", "register: p of the p-norm (> 0), or inf");
ABSL_FLAG(double, max_norm, 1.0, "register: static clip threshold (adaptive policies: warm-up)");
ABSL_FLAG(std::string, policy, "static", "register: clip policy: static, autoclip or zclip");
ABSL_FLAG(double, autoclip_percentile, 0, "register: AutoClip percentile in (0, 100] (0: 10)");
ABSL_FLAG(uint32_t, autoclip_history, 0, "register: AutoClip history length (0: 1000)");
ABSL_FLAG(double, zclip_alpha, 0, "register: ZClip EMA factor in (0, 1) (0: 0.97)");
ABSL_FLAG(double, zclip_z, 0, "register: ZClip z-score threshold (0: 2.5)");
ABSL_FLAG(uint32_t, warmup_steps, 0,
          "register: the adaptive policy's warm-up steps (0: AutoClip 10, ZClip 25)");
ABSL_FLAG(double, spike_sigma, 0, "register: skip steps this many sigma above the window (0: off)");
ABSL_FLAG(uint32_t, spike_window, 0, "register: spike rule window (0: 128)");
ABSL_FLAG(uint32_t, spike_warmup, 0, "register: spike rule warm-up (0: 16)");
ABSL_FLAG(std::string, nonfinite, "skip", "register: a NaN/Inf total: skip or error");
ABSL_FLAG(uint64_t, round_timeout_ms, 0, "register: round timeout in ms (0: 60000)");
ABSL_FLAG(double, timeout, 10,
          "Seconds allowed per RPC, > 0 (watch: to connect; the stream itself runs until "
          "interrupted)");

namespace {

using ::gradnorm::v1::Coordinator;

constexpr char kUsage[] =
    "usage: gradnormctl [flags] runs | run RUN | history RUN | summary RUN | "
    "watch RUN | health | register RUN --participants=N | finish RUN | delete RUN\n"
    "(see --help for flags)";

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", what, " '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect() {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  grpc::ChannelArguments args;
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (ca.empty() && cert.empty() && key.empty()) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    if (cert.empty() != key.empty()) {
      return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
    }
    grpc::SslCredentialsOptions options;
    if (!ca.empty()) {
      auto text = ReadFile(ca, "--tls_ca");
      if (!text.ok()) return text.status();
      options.pem_root_certs = *text;
    }
    if (!cert.empty()) {
      auto cert_text = ReadFile(cert, "--tls_cert");
      if (!cert_text.ok()) return cert_text.status();
      auto key_text = ReadFile(key, "--tls_key");
      if (!key_text.ok()) return key_text.status();
      options.pem_cert_chain = *cert_text;
      options.pem_private_key = *key_text;
    }
    creds = grpc::SslCredentials(options);
    const std::string name = absl::GetFlag(FLAGS_tls_server_name);
    if (!name.empty()) args.SetSslTargetNameOverride(name);
  }
  return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), creds, args);
}

absl::StatusOr<std::string> Token() {
  std::string token = absl::GetFlag(FLAGS_token);
  const std::string file = absl::GetFlag(FLAGS_token_file);
  if (!file.empty()) {
    auto text = ReadFile(file, "--token_file");
    if (!text.ok()) return text.status();
    token = std::string(absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  }
  return token;
}

absl::Time Deadline() { return absl::Now() + absl::Seconds(absl::GetFlag(FLAGS_timeout)); }

void Prepare(grpc::ClientContext* context, const std::string& token, bool deadline) {
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
  if (deadline) context->set_deadline(absl::ToChronoTime(Deadline()));
}

int Fail(const grpc::Status& status, const std::string& call) {
  std::cerr << "gradnormctl: " << call << " failed: "
            << absl::StatusCodeToString(
                   static_cast<absl::StatusCode>(status.error_code()))
            << ": " << status.error_message() << "\n";
  return 1;
}

// `multiline` pretty-prints; otherwise the object takes one line (for
// streams). Field names are the proto's in both.
void PrintJson(const google::protobuf::Message& message, bool multiline = true) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = multiline;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::cout << out;
  if (out.empty() || out.back() != '\n') std::cout << "\n";
}

// A table whose columns are as wide as their widest cell; numeric columns
// are right-aligned, text left-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : header_(std::move(header)) {}
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(std::ostream& out) const {
    std::vector<size_t> width(header_.size());
    std::vector<bool> numeric(header_.size(), true);
    for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
    for (const auto& row : rows_) {
      for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
        width[c] = std::max(width[c], row[c].size());
        if (!LooksNumeric(row[c])) numeric[c] = false;
      }
    }
    PrintRow(out, header_, width, numeric);
    for (const auto& row : rows_) PrintRow(out, row, width, numeric);
  }
  static void PrintRow(std::ostream& out, const std::vector<std::string>& row,
                       const std::vector<size_t>& width,
                       const std::vector<bool>& numeric) {
    std::string line;
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(width[c] - row[c].size(), ' ');
      line += numeric[c] ? pad + row[c] : row[c] + pad;
    }
    out << std::string(absl::StripTrailingAsciiWhitespace(line)) << "\n";
  }
  static bool LooksNumeric(const std::string& cell) {
    if (cell.empty()) return true;
    double ignored;
    return absl::SimpleAtod(cell, &ignored) || cell == "nan" || cell == "inf";
  }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

std::string Num(double value) { return absl::StrFormat("%.6g", value); }

std::string Time(int64_t unix_micros) {
  if (unix_micros == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixMicros(unix_micros),
                          absl::UTCTimeZone());
}

std::string PolicyName(const gradnorm::v1::RunConfig& config) {
  switch (config.clip_policy().policy_case()) {
    case gradnorm::v1::ClipPolicy::kAutoClip:
      return absl::StrCat("autoclip(p", Num(config.clip_policy().auto_clip().percentile()), ")");
    case gradnorm::v1::ClipPolicy::kZclip:
      return absl::StrCat("zclip(z", Num(config.clip_policy().zclip().z_threshold()), ")");
    default:
      return "static";
  }
}

std::string ActionName(gradnorm::v1::Action action) {
  switch (action) {
    case gradnorm::v1::ACTION_NONE: return "none";
    case gradnorm::v1::ACTION_CLIP: return "clip";
    case gradnorm::v1::ACTION_SKIP: return "skip";
    default: return "?";
  }
}

std::string ReasonName(gradnorm::v1::Reason reason) {
  switch (reason) {
    case gradnorm::v1::REASON_WITHIN_MAX_NORM: return "within_max_norm";
    case gradnorm::v1::REASON_ABOVE_MAX_NORM: return "above_max_norm";
    case gradnorm::v1::REASON_NONFINITE: return "nonfinite";
    case gradnorm::v1::REASON_SPIKE: return "spike";
    default: return "?";
  }
}

std::vector<std::string> RunRow(const gradnorm::v1::RunInfo& run) {
  return {run.run_id(),
          Num(run.config().norm_type()),
          Num(run.config().max_norm()),
          absl::StrCat(run.config().participants()),
          PolicyName(run.config()),
          absl::StrCat(run.rounds()),
          run.rounds() > 0 ? absl::StrCat(run.last_step()) : "-",
          absl::StrCat(run.open_rounds()),
          run.finished() ? "finished" : "running",
          Time(run.created_unix_micros())};
}

const std::vector<std::string> kRunHeader = {"RUN",    "P",         "MAX_NORM",
                                             "PARTICIPANTS", "POLICY", "ROUNDS",
                                             "LAST_STEP",    "OPEN",   "STATE",
                                             "CREATED"};

int Runs(Coordinator::Stub& stub, const std::string& token) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::ListRunsResponse response;
  grpc::Status status = stub.ListRuns(&context, {}, &response);
  if (!status.ok()) return Fail(status, "ListRuns");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
  }
  Table table(kRunHeader);
  for (const auto& run : response.runs()) table.Add(RunRow(run));
  table.Print(std::cout);
  return 0;
}

void PrintRun(const gradnorm::v1::RunInfo& run);

int Run(Coordinator::Stub& stub, const std::string& token, const std::string& run_id) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::GetRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::GetRunResponse response;
  grpc::Status status = stub.GetRun(&context, request, &response);
  if (!status.ok()) return Fail(status, "GetRun");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
  }
  PrintRun(response.run());
  return 0;
}

// One run as a FIELD / VALUE table (`run`, and `register` after it
// registered).
void PrintRun(const gradnorm::v1::RunInfo& run) {
  const auto& config = run.config();
  Table table({"FIELD", "VALUE"});
  table.Add({"run", run.run_id()});
  table.Add({"created", Time(run.created_unix_micros())});
  table.Add({"norm_type", Num(config.norm_type())});
  table.Add({"max_norm", Num(config.max_norm())});
  table.Add({"participants", absl::StrCat(config.participants())});
  table.Add({"clip_policy", PolicyName(config)});
  table.Add({"spike_rule", config.spike_rule().enabled()
                               ? absl::StrCat("sigma ", Num(config.spike_rule().sigma()),
                                              ", window ", config.spike_rule().window(),
                                              ", warmup ", config.spike_rule().warmup_steps())
                               : "off"});
  table.Add({"nonfinite_policy",
             config.nonfinite_policy() == gradnorm::v1::NON_FINITE_POLICY_ERROR ? "error"
                                                                                 : "skip"});
  table.Add({"round_timeout_ms", absl::StrCat(config.round_timeout_ms())});
  table.Add({"rounds", absl::StrCat(run.rounds())});
  table.Add({"last_step", run.rounds() > 0 ? absl::StrCat(run.last_step()) : "-"});
  table.Add({"open_rounds", absl::StrCat(run.open_rounds())});
  table.Add({"state", run.finished() ? "finished" : "running"});
  table.Add({"finished", run.finished() ? Time(run.finished_unix_micros()) : "-"});
  table.Print(std::cout);
}

int History(Coordinator::Stub& stub, const std::string& token, const std::string& run_id) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::GetHistoryRequest request;
  request.set_run_id(run_id);
  request.set_from_step(absl::GetFlag(FLAGS_from));
  request.set_to_step(absl::GetFlag(FLAGS_to));
  request.set_max_points(absl::GetFlag(FLAGS_points));
  gradnorm::v1::GetHistoryResponse response;
  grpc::Status status = stub.GetHistory(&context, request, &response);
  if (!status.ok()) return Fail(status, "GetHistory");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
  }
  Table table({"FIRST_STEP", "LAST_STEP", "ROUNDS", "MIN", "MEAN", "MAX", "LAST",
               "CLIPPED", "SKIPPED", "MAX_SPREAD_S"});
  for (const auto& b : response.buckets()) {
    table.Add({absl::StrCat(b.first_step()), absl::StrCat(b.last_step()),
               absl::StrCat(b.rounds()), Num(b.min_norm()), Num(b.mean_norm()),
               Num(b.max_norm()), Num(b.last_norm()), absl::StrCat(b.clipped()),
               absl::StrCat(b.skipped()), Num(b.max_arrival_spread_seconds())});
  }
  table.Print(std::cout);
  return 0;
}

int Summary(Coordinator::Stub& stub, const std::string& token, const std::string& run_id) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::GetSummaryRequest request;
  request.set_run_id(run_id);
  request.set_from_step(absl::GetFlag(FLAGS_from));
  request.set_to_step(absl::GetFlag(FLAGS_to));
  request.set_top_slowest(absl::GetFlag(FLAGS_top));
  gradnorm::v1::GetSummaryResponse response;
  grpc::Status status = stub.GetSummary(&context, request, &response);
  if (!status.ok()) return Fail(status, "GetSummary");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
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
  for (uint64_t step : response.skipped_steps()) skipped.push_back(absl::StrCat(step));
  table.Add({"skipped_steps", skipped.empty() ? "-" : absl::StrJoin(skipped, ",")});
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

// Waits until `channel` is connected or has failed to connect (then the call
// that follows fails at once with gRPC's own UNAVAILABLE and its reason);
// DEADLINE_EXCEEDED when it is still connecting at the --timeout deadline.
grpc::Status AwaitConnection(grpc::Channel& channel) {
  const absl::Time deadline = Deadline();
  grpc_connectivity_state state = channel.GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY && state != GRPC_CHANNEL_TRANSIENT_FAILURE &&
         state != GRPC_CHANNEL_SHUTDOWN) {
    if (!channel.WaitForStateChange(state, absl::ToChronoTime(deadline))) {
      return grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat("no connection to ", absl::GetFlag(FLAGS_target), " within --timeout ",
                       absl::GetFlag(FLAGS_timeout),
                       " s (still connecting); expected a reachable coordinator"));
    }
    state = channel.GetState(/*try_to_connect=*/true);
  }
  return grpc::Status::OK;
}

int Watch(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
          const std::string& run_id) {
  // The stream has no deadline (it follows the run until interrupted), so
  // --timeout bounds connecting instead of waiting out gRPC's own connect
  // timeout and backoff.
  grpc::Status connected = AwaitConnection(*channel);
  if (!connected.ok()) return Fail(connected, "WatchRun");
  auto stub = Coordinator::NewStub(channel);
  // A run that is not registered yet (watch started before the trainers):
  // wait for it, saying so once, rather than fail.
  for (bool told = false;;) {
    grpc::ClientContext lookup;
    Prepare(&lookup, token, true);
    gradnorm::v1::GetRunRequest get;
    get.set_run_id(run_id);
    gradnorm::v1::GetRunResponse run;
    grpc::Status found = stub->GetRun(&lookup, get, &run);
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
  Prepare(&context, token, false);
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
      std::cout << absl::StrFormat(kRowFormat, absl::StrCat(round.step()),
                                   Num(round.total_norm()), Num(round.clip_coef()),
                                   ActionName(round.action()), ReasonName(round.reason()),
                                   Num(round.arrival_spread_seconds()),
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

int Health(const std::shared_ptr<grpc::Channel>& channel, const std::string& token) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  Prepare(&context, token, true);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(absl::GetFlag(FLAGS_service));
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail(status, "Health.Check");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
  } else {
    std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(
                     response.status())
              << "\n";
  }
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// The run config the register flags describe; INVALID_ARGUMENT for a
// setting that is not understood (the coordinator checks the values).
absl::StatusOr<gradnorm::v1::RunConfig> ConfigFromFlags() {
  gradnorm::v1::RunConfig config;
  if (absl::GetFlag(FLAGS_participants) < 1) {
    return absl::InvalidArgumentError(
        "--participants is required: the number of jobs (>= 1)");
  }
  config.set_participants(absl::GetFlag(FLAGS_participants));
  const std::string p = absl::AsciiStrToLower(absl::GetFlag(FLAGS_norm_type));
  double norm_type = 0;
  if (p == "inf") {
    norm_type = std::numeric_limits<double>::infinity();
  } else if (!absl::SimpleAtod(p, &norm_type)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--norm_type=", p, ": expected a number > 0 or inf"));
  }
  config.set_norm_type(norm_type);
  config.set_max_norm(absl::GetFlag(FLAGS_max_norm));
  const std::string policy = absl::GetFlag(FLAGS_policy);
  const uint32_t warmup = absl::GetFlag(FLAGS_warmup_steps);
  if (policy == "static") {
    config.mutable_clip_policy()->mutable_static_clip();
  } else if (policy == "autoclip") {
    auto* autoclip = config.mutable_clip_policy()->mutable_auto_clip();
    autoclip->set_percentile(absl::GetFlag(FLAGS_autoclip_percentile));
    autoclip->set_history_length(absl::GetFlag(FLAGS_autoclip_history));
    autoclip->set_warmup_steps(warmup);
  } else if (policy == "zclip") {
    auto* zclip = config.mutable_clip_policy()->mutable_zclip();
    zclip->set_alpha(absl::GetFlag(FLAGS_zclip_alpha));
    zclip->set_z_threshold(absl::GetFlag(FLAGS_zclip_z));
    zclip->set_warmup_steps(warmup);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--policy=", policy, ": expected static, autoclip or zclip"));
  }
  if (absl::GetFlag(FLAGS_spike_sigma) != 0) {
    auto* spike = config.mutable_spike_rule();
    spike->set_enabled(true);
    spike->set_sigma(absl::GetFlag(FLAGS_spike_sigma));
    spike->set_window(absl::GetFlag(FLAGS_spike_window));
    spike->set_warmup_steps(absl::GetFlag(FLAGS_spike_warmup));
  }
  const std::string nonfinite = absl::GetFlag(FLAGS_nonfinite);
  if (nonfinite == "skip") {
    config.set_nonfinite_policy(gradnorm::v1::NON_FINITE_POLICY_SKIP);
  } else if (nonfinite == "error") {
    config.set_nonfinite_policy(gradnorm::v1::NON_FINITE_POLICY_ERROR);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "--nonfinite=", nonfinite, ": expected skip or error"));
  }
  config.set_round_timeout_ms(absl::GetFlag(FLAGS_round_timeout_ms));
  return config;
}

int Register(Coordinator::Stub& stub, const std::string& token,
             const std::string& run_id, const gradnorm::v1::RunConfig& config) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::RegisterRunRequest request;
  request.set_run_id(run_id);
  *request.mutable_config() = config;
  gradnorm::v1::RegisterRunResponse response;
  grpc::Status status = stub.RegisterRun(&context, request, &response);
  if (!status.ok()) return Fail(status, "RegisterRun");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
  }
  std::cout << (response.created() ? "registered run " : "run already registered: ")
            << run_id << "\n";
  PrintRun(response.run());
  return 0;
}

int Finish(Coordinator::Stub& stub, const std::string& token, const std::string& run_id) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::FinishRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::FinishRunResponse response;
  grpc::Status status = stub.FinishRun(&context, request, &response);
  if (!status.ok()) return Fail(status, "FinishRun");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
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

int Delete(Coordinator::Stub& stub, const std::string& token, const std::string& run_id) {
  grpc::ClientContext context;
  Prepare(&context, token, true);
  gradnorm::v1::DeleteRunRequest request;
  request.set_run_id(run_id);
  gradnorm::v1::DeleteRunResponse response;
  grpc::Status status = stub.DeleteRun(&context, request, &response);
  if (!status.ok()) return Fail(status, "DeleteRun");
  if (absl::GetFlag(FLAGS_json)) {
    PrintJson(response);
    return 0;
  }
  std::cout << "deleted run " << run_id << " and its " << response.rounds()
            << " rounds\n";
  return 0;
}

// gradnormctl's own flags and their help, for --help.
void PrintHelp() {
  std::cout << kUsage << "\n\nflags:\n";
  std::vector<std::pair<std::string, const absl::CommandLineFlag*>> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "gradnormctl")) {
      flags.emplace_back(std::string(name), flag);
    }
  }
  std::sort(flags.begin(), flags.end());
  for (const auto& [name, flag] : flags) {
    std::cout << "  --" << name << " (" << flag->Help()
              << "); default: " << flag->DefaultValue() << "\n";
  }
  std::cout << "\nenvironment: GRADNORM_TARGET (--target), "
               "GRADNORM_TOKEN_FILE (--token_file); flags take precedence\n";
}

// Checks the command line before absl parses it, which exits 1 on an unknown
// flag or a bad value and on --help: gradnormctl's usage errors exit 2 and
// --help 0. Returns the exit code when the program must stop, and records
// the flags given in `given`.
std::optional<int> CheckCommandLine(int argc, char** argv,
                                    std::set<std::string>* given) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "-")) continue;  // a positional argument
    absl::ConsumePrefix(&arg, "-");
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    if (name == "help" || name == "h" || name == "helpfull" ||
        name == "helpshort") {
      PrintHelp();
      return 0;
    }
    if (name == "version") continue;  // absl prints it and exits 0
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    bool negated = false;
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      flag = absl::FindCommandLineFlag(name.substr(2));
      negated = flag != nullptr && flag->IsOfType<bool>();
      if (!negated) flag = nullptr;
    }
    if (flag == nullptr ||
        !absl::StrContains(flag->Filename(), "gradnormctl")) {
      std::cerr << "gradnormctl: unknown flag --" << name << "\n"
                << kUsage << "\n";
      return 2;
    }
    std::string value;
    if (eq != absl::string_view::npos) {
      value = std::string(arg.substr(eq + 1));
    } else if (negated) {
      value = "false";
    } else if (flag->IsOfType<bool>()) {
      value = "true";
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::cerr << "gradnormctl: --" << name << " needs a value\n";
      return 2;
    }
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      std::cerr << "gradnormctl: --" << name << "=" << value << ": " << error
                << "\n";
      return 2;
    }
    given->insert(std::string(flag->Name()));
  }
  return std::nullopt;
}

// GRADNORM_TARGET and GRADNORM_TOKEN_FILE stand for --target and
// --token_file when those are not given.
void ApplyEnvironment(const std::set<std::string>& given) {
  const char* target = std::getenv("GRADNORM_TARGET");
  if (target != nullptr && *target != '\0' && !given.count("target")) {
    absl::SetFlag(&FLAGS_target, target);
  }
  const char* token_file = std::getenv("GRADNORM_TOKEN_FILE");
  if (token_file != nullptr && *token_file != '\0' &&
      !given.count("token_file") && !given.count("token")) {
    absl::SetFlag(&FLAGS_token_file, token_file);
  }
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  absl::FlagsUsageConfig usage;
  usage.version_string = [] {
    return std::string("gradnormctl " GRADNORM_VERSION "\n");
  };
  absl::SetFlagsUsageConfig(usage);
  std::set<std::string> given;
  if (std::optional<int> exit_code = CheckCommandLine(argc, argv, &given)) {
    return *exit_code;
  }
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  ApplyEnvironment(given);
  if (args.size() < 2) {
    std::cerr << kUsage << "\n";
    return 2;
  }
  const std::string command = args[1];
  const bool needs_run = command == "run" || command == "history" ||
                         command == "summary" || command == "watch" ||
                         command == "register" || command == "finish" ||
                         command == "delete";
  const bool known = needs_run || command == "runs" || command == "health";
  if (!known || (needs_run && args.size() != 3) || (!needs_run && args.size() != 2)) {
    std::cerr << "gradnormctl: bad command line\n" << kUsage << "\n";
    return 2;
  }
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout > 0) || !std::isfinite(timeout)) {
    std::cerr << "gradnormctl: --timeout=" << timeout
              << ": expected a positive, finite number of seconds\n";
    return 2;
  }
  if (absl::GetFlag(FLAGS_top) < 1) {
    std::cerr << "gradnormctl: --top=0: expected at least 1 (how many slowest participants "
                 "the summary lists)\n";
    return 2;
  }
  absl::StatusOr<gradnorm::v1::RunConfig> config;
  if (command == "register") {
    config = ConfigFromFlags();
    if (!config.ok()) {
      std::cerr << "gradnormctl: " << config.status().message() << "\n";
      return 2;
    }
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
  absl::StatusOr<std::string> token = Token();
  if (!channel.ok() || !token.ok()) {
    std::cerr << "gradnormctl: "
              << (channel.ok() ? token.status() : channel.status()).ToString() << "\n";
    return 2;
  }
  if (command == "health") return Health(*channel, *token);
  auto stub = Coordinator::NewStub(*channel);
  if (command == "runs") return Runs(*stub, *token);
  const std::string run_id = args[2];
  if (command == "run") return Run(*stub, *token, run_id);
  if (command == "register") return Register(*stub, *token, run_id, *config);
  if (command == "history") return History(*stub, *token, run_id);
  if (command == "summary") return Summary(*stub, *token, run_id);
  if (command == "finish") return Finish(*stub, *token, run_id);
  if (command == "delete") return Delete(*stub, *token, run_id);
  return Watch(*channel, *token, run_id);
}
