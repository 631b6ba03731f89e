// gradnormctl's flags, and what is made of them: the command line checked
// before absl parses it, the environment, the channel, the token and a run's
// config.
//
//   std::set<std::string> given;
//   if (std::optional<int> exit = CheckCommandLine(argc, argv, &given)) ...
//   absl::ParseCommandLine(argc, argv);
//   ApplyEnvironment(given);
//   absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Connect();
#ifndef GRADNORM_TOOLS_GRADNORMCTL_FLAGS_H_
#define GRADNORM_TOOLS_GRADNORMCTL_FLAGS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "grpcpp/channel.h"

ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(std::string, tls_ca);
ABSL_DECLARE_FLAG(std::string, tls_cert);
ABSL_DECLARE_FLAG(std::string, tls_key);
ABSL_DECLARE_FLAG(std::string, tls_server_name);
ABSL_DECLARE_FLAG(std::string, token);
ABSL_DECLARE_FLAG(std::string, token_file);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(uint64_t, from);
ABSL_DECLARE_FLAG(uint64_t, to);
ABSL_DECLARE_FLAG(uint32_t, width);
ABSL_DECLARE_FLAG(uint32_t, height);
ABSL_DECLARE_FLAG(bool, watch);
ABSL_DECLARE_FLAG(uint32_t, points);
ABSL_DECLARE_FLAG(uint32_t, top);
ABSL_DECLARE_FLAG(std::string, service);
ABSL_DECLARE_FLAG(uint32_t, participants);
ABSL_DECLARE_FLAG(std::string, norm_type);
ABSL_DECLARE_FLAG(double, max_norm);
ABSL_DECLARE_FLAG(std::string, policy);
ABSL_DECLARE_FLAG(double, autoclip_percentile);
ABSL_DECLARE_FLAG(uint32_t, autoclip_history);
ABSL_DECLARE_FLAG(double, zclip_alpha);
ABSL_DECLARE_FLAG(double, zclip_z);
ABSL_DECLARE_FLAG(uint32_t, warmup_steps);
ABSL_DECLARE_FLAG(double, spike_sigma);
ABSL_DECLARE_FLAG(uint32_t, spike_window);
ABSL_DECLARE_FLAG(uint32_t, spike_warmup);
ABSL_DECLARE_FLAG(std::string, nonfinite);
ABSL_DECLARE_FLAG(uint64_t, round_timeout_ms);
ABSL_DECLARE_FLAG(bool, inexact);
ABSL_DECLARE_FLAG(double, timeout);

namespace gradnorm {
namespace gradnormctl {

extern const char kUsage[];

// gradnormctl's own flags and their help, for --help.
void PrintHelp();

// Checks the command line before absl parses it, which exits 1 on an unknown
// flag or a bad value and on --help: gradnormctl's usage errors exit 2 and
// --help 0. Returns the exit code when the program must stop, and records
// the flags given in `given`.
std::optional<int> CheckCommandLine(int argc, char** argv,
                                    std::set<std::string>* given);

// GRADNORM_TARGET and GRADNORM_TOKEN_FILE stand for --target and
// --token_file when those are not given.
void ApplyEnvironment(const std::set<std::string>& given);

// A channel to --target with the TLS flags' security, built as
// CoordinatorClient builds its own (NewCoordinatorChannel); NOT_FOUND for a
// file that cannot be read, INVALID_ARGUMENT for --tls_cert without --tls_key.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect();

// The bearer token of --token or --token_file (its first line); "" for none.
absl::StatusOr<std::string> Token();

// The run config the register flags describe; INVALID_ARGUMENT for a
// setting that is not understood (the coordinator checks the values).
absl::StatusOr<gradnorm::v1::RunConfig> ConfigFromFlags();

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_FLAGS_H_
