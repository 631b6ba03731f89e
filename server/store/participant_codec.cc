#include "server/store/participant_codec.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {
namespace {

uint64_t BitsOf(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

void Store64(uint64_t value, char* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(value >> (8 * i));
}

uint64_t Load64(const char* in) {
  uint64_t value = 0;
  for (int i = 0; i < 8; ++i) {
    value |= uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  }
  return value;
}

double DoubleOf(uint64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

}  // namespace

std::string EncodeParticipants(
    absl::Span<const ParticipantRecord> participants) {
  std::string blob(participants.size() * kParticipantBlobBytes, '\0');
  char* out = blob.data();
  for (const ParticipantRecord& p : participants) {
    Store64(BitsOf(p.partial), out);
    Store64(BitsOf(p.arrival_offset_seconds), out + 8);
    Store64(p.num_elements, out + 16);
    out += kParticipantBlobBytes;
  }
  return blob;
}

absl::StatusOr<std::vector<ParticipantRecord>> DecodeParticipants(
    absl::string_view blob) {
  if (blob.size() % kParticipantBlobBytes != 0) {
    return absl::DataLossError(
        absl::StrCat("a participants blob of ", blob.size(),
                     " bytes; expected a multiple of ", kParticipantBlobBytes,
                     " (partial, arrival offset, elements)"));
  }
  std::vector<ParticipantRecord> participants(blob.size() /
                                              kParticipantBlobBytes);
  const char* in = blob.data();
  for (size_t i = 0; i < participants.size();
       ++i, in += kParticipantBlobBytes) {
    ParticipantRecord& p = participants[i];
    p.partial = DoubleOf(Load64(in));
    p.arrival_offset_seconds = DoubleOf(Load64(in + 8));
    p.num_elements = Load64(in + 16);
    if (!(p.arrival_offset_seconds >= 0) ||
        std::isinf(p.arrival_offset_seconds)) {
      return absl::DataLossError(absl::StrCat(
          "participant ", i, " has arrival offset ", p.arrival_offset_seconds,
          " s in its stored blob; expected a finite value >= 0"));
    }
  }
  return participants;
}

}  // namespace server
}  // namespace gradnorm
