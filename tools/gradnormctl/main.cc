// gradnormctl: command-line client of the gradnorm coordinator.
//
//   gradnormctl [flags] runs                 list runs
//   gradnormctl [flags] run RUN              describe one run
//   gradnormctl [flags] history RUN [--from=S --to=S --points=N]
//   gradnormctl [flags] summary RUN [--from=S --to=S --top=N]   (N >= 1)
//   gradnormctl [flags] plot RUN [--from=S --to=S --width=W --height=H --watch]
//   gradnormctl [flags] parity RUN_A RUN_B [--from=S] [--json]
//                                            the history as a terminal chart
//   gradnormctl [flags] export-tensorboard RUN DIR [--from=S]
//                                            the run's rounds as a TensorBoard
//                                            event file in DIR
//   gradnormctl [flags] watch RUN [--from=S] stream finalized rounds (waits
//                                            for a run not registered yet)
//   gradnormctl [flags] health [--service=NAME]
//   gradnormctl [flags] register RUN --participants=N [--norm_type=P
//       --max_norm=X --policy=static|autoclip|zclip --autoclip_percentile=Q
//       --autoclip_history=N --zclip_alpha=A --zclip_z=Z --warmup_steps=N
//       --spike_sigma=S --spike_window=N --spike_warmup=N
//       --nonfinite=skip|error --round_timeout_ms=T --inexact]
//                                            register a run (every policy)
//   gradnormctl [flags] finish RUN           the run is over: no new rounds,
//                                            watches end (role trainer)
//   gradnormctl [flags] delete RUN           delete the run and its history
//                                            (role admin)
//
// --help lists the flags and exits 0; --version prints the version.
// Output is an aligned table by default, the proto3 JSON mapping with --json
// (proto field names, e.g. total_norm; `watch --json` prints one object per
// line). Connection: --target (host:port, or several as ipv4:a:p,b:q), --tls_ca
// (verify the server; turns on TLS), --tls_cert/--tls_key (client certificate
// for mutual TLS),
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
#include <cmath>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/statusor.h"
#include "tools/gradnormctl/commands.h"
#include "tools/gradnormctl/flags.h"

int main(int argc, char** argv) {
  using namespace gradnorm::gradnormctl;  // NOLINT: the program's own names
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
                         command == "plot" || command == "summary" ||
                         command == "watch" || command == "register" ||
                         command == "finish" || command == "delete";
  const bool two_args = command == "export-tensorboard" || command == "parity";
  const bool known =
      needs_run || two_args || command == "runs" || command == "health";
  const size_t expected_args = two_args ? 4 : needs_run ? 3 : 2;
  if (!known || args.size() != expected_args) {
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
    std::cerr << "gradnormctl: --top=0: expected at least 1 (how many slowest "
                 "participants "
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
              << (channel.ok() ? token.status() : channel.status()).ToString()
              << "\n";
    return 2;
  }
  if (command == "health") return Health(*channel, *token);
  if (command == "export-tensorboard") {
    return ExportTensorBoard(*channel, *token, args[2], args[3]);
  }
  if (command == "parity") return Parity(*channel, *token, args[2], args[3]);
  if (command == "runs") return Runs(*channel, *token);
  if (command == "plot") return Plot(*channel, *token, args[2]);
  const std::string run_id = args[2];
  if (command == "run") return Run(*channel, *token, run_id);
  if (command == "register") return Register(*channel, *token, run_id, *config);
  if (command == "history") return History(*channel, *token, run_id);
  if (command == "summary") return Summary(*channel, *token, run_id);
  if (command == "finish") return Finish(*channel, *token, run_id);
  if (command == "delete") return Delete(*channel, *token, run_id);
  return Watch(*channel, *token, run_id);
}
