// A run's rounds as a TensorBoard event file, which TensorBoard, W&B
// (`wandb sync DIR`) and Aim import: per step the scalars grad_norm/total,
// grad_norm/clip_coef, grad_norm/effective_max_norm and grad_norm/skipped
// (1 for a skipped step), at the time the round was finalized.
//
//   ASSIGN_OR_RETURN(std::string path, WriteTensorBoardEvents(rounds, dir));
//
// The file is TFRecord framing of serialized tensorboard Event messages:
// per record a little-endian uint64 length, the masked CRC32C of those 8
// bytes, the data, and the masked CRC32C of the data. The first event carries
// file_version "brain.Event:2".
#ifndef GRADNORM_TOOLS_GRADNORMCTL_TENSORBOARD_H_
#define GRADNORM_TOOLS_GRADNORMCTL_TENSORBOARD_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace gradnormctl {

// CRC-32C (Castagnoli) of `data`.
uint32_t Crc32c(absl::string_view data);
// TFRecord's masked form of a CRC-32C.
uint32_t MaskedCrc32c(absl::string_view data);

// One TFRecord around `data`.
std::string TfRecord(absl::string_view data);

// The serialized Event of one round (step, wall time, the four scalars).
std::string RoundEvent(const v1::RoundResult& round);
// The serialized first Event of a file.
std::string FileVersionEvent(double wall_time);

// Writes `rounds` to a new events.out.tfevents.<seconds>.gradnorm.<run> file
// in `dir` (created if missing) and returns its path. INVALID_ARGUMENT for an
// empty dir; UNAVAILABLE when it cannot be written.
absl::StatusOr<std::string> WriteTensorBoardEvents(
    const std::vector<v1::RoundResult>& rounds, const std::string& dir,
    const std::string& run_id);

}  // namespace gradnormctl
}  // namespace gradnorm

#endif  // GRADNORM_TOOLS_GRADNORMCTL_TENSORBOARD_H_
