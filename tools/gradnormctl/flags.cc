#include "tools/gradnormctl/flags.h"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/coordinator_client.h"
#include "grpcpp/support/channel_arguments.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051",
          "Coordinator address, host:port; several coordinators (an active "
          "one and a standby) as ipv4:host:port,host:port or a DNS name "
          "with several addresses: calls go to the one serving");
ABSL_FLAG(
    std::string, tls_ca, "",
    "PEM CA bundle that signs the coordinator's certificate; turns on TLS");
ABSL_FLAG(std::string, tls_cert, "", "PEM client certificate (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(
    std::string, tls_server_name, "",
    "Name to verify in the server certificate (default: the target host)");
ABSL_FLAG(std::string, token, "", "Bearer token (prefer --token_file)");
ABSL_FLAG(std::string, token_file, "",
          "File whose first line is the bearer token");
ABSL_FLAG(bool, json, false, "Print the proto3 JSON mapping instead of tables");
ABSL_FLAG(uint64_t, from, 0, "history/summary/watch: first step, inclusive");
ABSL_FLAG(uint64_t, to, 0, "history/summary: last step, inclusive (0: latest)");
ABSL_FLAG(uint32_t, width, 0,
          "plot: characters per line (0: the terminal's width)");
ABSL_FLAG(uint32_t, height, 0,
          "plot: lines of chart (0: fit the terminal's height)");
ABSL_FLAG(bool, watch, false, "plot: redraw every second until interrupted");
ABSL_FLAG(uint32_t, points, 0,
          "history: at most this many buckets (0: every round)");
ABSL_FLAG(uint32_t, top, 5,
          "summary: how many slowest participants to list (>= 1)");
ABSL_FLAG(std::string, service, "", "health: service name ('' = whole server)");
ABSL_FLAG(uint32_t, participants, 0,
          "register: number of jobs that report every step (>= 1)");
ABSL_FLAG(std::string, norm_type, "2",
          "register: p of the p-norm (> 0), or inf");
ABSL_FLAG(double, max_norm, 1.0,
          "register: static clip threshold (adaptive policies: warm-up)");
ABSL_FLAG(std::string, policy, "static",
          "register: clip policy: static, autoclip or zclip");
ABSL_FLAG(double, autoclip_percentile, 0,
          "register: AutoClip percentile in (0, 100] (0: 10)");
ABSL_FLAG(uint32_t, autoclip_history, 0,
          "register: AutoClip history length (0: 1000)");
ABSL_FLAG(double, zclip_alpha, 0,
          "register: ZClip EMA factor in (0, 1) (0: 0.97)");
ABSL_FLAG(double, zclip_z, 0, "register: ZClip z-score threshold (0: 2.5)");
ABSL_FLAG(
    uint32_t, warmup_steps, 0,
    "register: the adaptive policy's warm-up steps (0: AutoClip 10, ZClip 25)");
ABSL_FLAG(double, spike_sigma, 0,
          "register: skip steps this many sigma above the window (0: off)");
ABSL_FLAG(uint32_t, spike_window, 0, "register: spike rule window (0: 128)");
ABSL_FLAG(uint32_t, spike_warmup, 0, "register: spike rule warm-up (0: 16)");
ABSL_FLAG(std::string, nonfinite, "skip",
          "register: a NaN/Inf total: skip or error");
ABSL_FLAG(uint64_t, round_timeout_ms, 0,
          "register: round timeout in ms (0: 60000)");
ABSL_FLAG(bool, inexact, false,
          "register: for p = 1 or 2, also take reports with only a double "
          "partial (clients without exact partials); totals are then "
          "deterministic only per layout");
ABSL_FLAG(double, timeout, 10,
          "Seconds allowed per RPC, > 0 (watch: to connect; the stream itself "
          "runs until "
          "interrupted)");

namespace gradnorm {
namespace gradnormctl {

const char kUsage[] =
    "usage: gradnormctl [flags] runs | run RUN | history RUN | summary RUN | "
    "plot RUN | export-tensorboard RUN DIR | parity RUN_A RUN_B | watch RUN | "
    "health | register "
    "RUN --participants=N | finish RUN | delete RUN\n"
    "(see --help for flags)";

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(
        absl::StrCat("cannot read ", what, " '", path, "'"));
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect() {
  CoordinatorClientOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  const std::string ca = absl::GetFlag(FLAGS_tls_ca);
  const std::string cert = absl::GetFlag(FLAGS_tls_cert);
  const std::string key = absl::GetFlag(FLAGS_tls_key);
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!ca.empty() || !cert.empty()) {
    options.security = cert.empty()
                           ? CoordinatorClientOptions::Security::kTls
                           : CoordinatorClientOptions::Security::kMutualTls;
    options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  }
  if (!ca.empty()) {
    absl::StatusOr<std::string> text = ReadFile(ca, "--tls_ca");
    if (!text.ok()) return text.status();
    options.root_certs_pem = *std::move(text);
  }
  if (!cert.empty()) {
    absl::StatusOr<std::string> cert_text = ReadFile(cert, "--tls_cert");
    if (!cert_text.ok()) return cert_text.status();
    absl::StatusOr<std::string> key_text = ReadFile(key, "--tls_key");
    if (!key_text.ok()) return key_text.status();
    options.client_cert_pem = *std::move(cert_text);
    options.client_key_pem = *std::move(key_text);
  }
  // gRPC's own connect timeout and backoff, not CoordinatorClient's short
  // ones: a command makes one call, and `watch` bounds connecting by
  // --timeout itself (DEADLINE_EXCEEDED while still connecting).
  return NewCoordinatorChannel(options, grpc::ChannelArguments());
}

absl::StatusOr<std::string> Token() {
  std::string token = absl::GetFlag(FLAGS_token);
  const std::string file = absl::GetFlag(FLAGS_token_file);
  if (!file.empty()) {
    auto text = ReadFile(file, "--token_file");
    if (!text.ok()) return text.status();
    token = std::string(
        absl::StripAsciiWhitespace(text->substr(0, text->find('\n'))));
  }
  return token;
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
    return absl::InvalidArgumentError(
        absl::StrCat("--norm_type=", p, ": expected a number > 0 or inf"));
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
    return absl::InvalidArgumentError(
        absl::StrCat("--nonfinite=", nonfinite, ": expected skip or error"));
  }
  config.set_round_timeout_ms(absl::GetFlag(FLAGS_round_timeout_ms));
  config.set_inexact(absl::GetFlag(FLAGS_inexact));
  return config;
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

}  // namespace gradnormctl
}  // namespace gradnorm
