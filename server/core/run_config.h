// Run ids and run configs: validation, defaults and comparison
// (docs/protocol.md, proto/gradnorm/v1/coordinator.proto).
//
//   absl::StatusOr<v1::RunConfig> config = NormalizeRunConfig(request.config(),
//                                                            kMaxParticipants);
//   if (!config.ok()) return config.status();  // INVALID_ARGUMENT
//   std::vector<std::string> diff = DiffRunConfigs(stored, *config);
//
// Thread-safety: pure functions.
#ifndef GRADNORM_SERVER_CORE_RUN_CONFIG_H_
#define GRADNORM_SERVER_CORE_RUN_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace server {

// Defaults for unset (zero) fields, as documented in the proto.
inline constexpr double kDefaultNormType = 2.0;
inline constexpr uint64_t kDefaultRoundTimeoutMs = 60000;
inline constexpr double kDefaultAutoClipPercentile = 10.0;
inline constexpr uint32_t kDefaultAutoClipHistoryLength = 1000;
inline constexpr uint32_t kDefaultAutoClipWarmupSteps = 10;
inline constexpr double kDefaultZClipAlpha = 0.97;
inline constexpr double kDefaultZClipZThreshold = 2.5;
inline constexpr uint32_t kDefaultZClipWarmupSteps = 25;
inline constexpr double kDefaultSpikeSigma = 6.0;
inline constexpr uint32_t kDefaultSpikeWindow = 128;
inline constexpr uint32_t kDefaultSpikeWarmupSteps = 16;

// Upper bounds that keep one run's memory and timers sane.
inline constexpr uint64_t kMaxRoundTimeoutMs = 24ull * 3600 * 1000;  // 1 day
inline constexpr uint32_t kMaxHistoryLength = 1000000;
inline constexpr uint32_t kMaxSpikeWindow = 1000000;
inline constexpr size_t kMaxRunIdLength = 128;

// OK iff `run_id` matches [A-Za-z0-9._-]{1,128}; else INVALID_ARGUMENT saying
// what was wrong (empty, too long, or the first bad character).
absl::Status ValidateRunId(absl::string_view run_id);

// Validates `config` and returns it with every unset field at its default.
// INVALID_ARGUMENT names the field, its value and the allowed range:
// norm_type NaN or <= 0 (+Infinity is the inf-norm); max_norm negative, NaN or
// infinite; participants 0; round_timeout_ms above
// kMaxRoundTimeoutMs; AutoClip percentile outside (0, 100], history_length
// above kMaxHistoryLength; ZClip alpha outside (0, 1), z_threshold not finite
// and > 0; spike sigma not finite and > 0, window above kMaxSpikeWindow,
// warmup_steps above window; an unknown nonfinite_policy value.
// RESOURCE_EXHAUSTED for more participants than `max_participants`, the
// server's limit (--max_participants), as for its other limits.
absl::StatusOr<v1::RunConfig> NormalizeRunConfig(const v1::RunConfig& config,
                                                 uint32_t max_participants);

// The fields in which two normalized configs differ, each as
// "path: stored -> requested" (e.g. "max_norm: 1 -> 2",
// "clip_policy: static_clip -> zclip"), in field order; empty when equal.
std::vector<std::string> DiffRunConfigs(const v1::RunConfig& stored,
                                        const v1::RunConfig& requested);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_CORE_RUN_CONFIG_H_
