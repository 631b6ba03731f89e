// Fuzzes the decoder of a round's participants BLOB (participant_codec.h), as
// a damaged database would feed it: anything is either a DATA_LOSS error or
// records that encode back to exactly the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "server/store/participant_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gradnorm::server;
  const std::string blob(reinterpret_cast<const char*>(data), size);
  auto decoded = DecodeParticipants(blob);
  if (!decoded.ok()) {
    if (decoded.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  if (decoded->size() * kParticipantBlobBytes != size) std::abort();
  if (EncodeParticipants(*decoded) != blob) std::abort();
  return 0;
}
