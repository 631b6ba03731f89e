// The participants of a finalized round as one SQLite BLOB, stored in the
// round's own row: one row (one B-tree page) written per round instead of one
// per participant, which is most of a round's commit cost.
//
// Layout (format version 1 of the blob, schema version 2 of the store): 24
// bytes per participant, in participant order, each three little-endian 64-bit
// fields: partial (IEEE-754 binary64 bits, so NaN and +Inf stay as reported),
// arrival_offset_seconds (binary64), num_elements (unsigned).
//
//   std::string blob = EncodeParticipants(record.participants);
//   absl::StatusOr<std::vector<ParticipantRecord>> back =
//       DecodeParticipants(blob);
#ifndef GRADNORM_SERVER_STORE_PARTICIPANT_CODEC_H_
#define GRADNORM_SERVER_STORE_PARTICIPANT_CODEC_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

// Bytes per participant in the blob.
inline constexpr size_t kParticipantBlobBytes = 24;

std::string EncodeParticipants(
    absl::Span<const ParticipantRecord> participants);

// DATA_LOSS when the blob's size is not a multiple of kParticipantBlobBytes or
// an arrival offset is negative or not finite (no encoder writes those).
absl::StatusOr<std::vector<ParticipantRecord>> DecodeParticipants(
    absl::string_view blob);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_PARTICIPANT_CODEC_H_
