// Fuzzes run config validation (run_config.h) with arbitrary RunConfig bytes:
// a config either fails with INVALID_ARGUMENT or RESOURCE_EXHAUSTED, or
// normalizes to one that normalizes to itself, differs from itself in no
// field, and survives serialization.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "absl/status/status.h"
#include "gradnorm/v1/coordinator.pb.h"
#include "server/core/run_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gradnorm;
  constexpr uint32_t kMaxParticipants = 4096;
  v1::RunConfig config;
  if (!config.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto normalized = server::NormalizeRunConfig(config, kMaxParticipants);
  if (!normalized.ok()) {
    const auto code = normalized.status().code();
    if (code != absl::StatusCode::kInvalidArgument &&
        code != absl::StatusCode::kResourceExhausted) {
      std::abort();
    }
    if (normalized.status().message().empty()) std::abort();
    return 0;
  }
  auto again = server::NormalizeRunConfig(*normalized, kMaxParticipants);
  if (!again.ok()) std::abort();
  if (!server::DiffRunConfigs(*normalized, *again).empty()) std::abort();
  if (!server::DiffRunConfigs(*normalized, *normalized).empty()) std::abort();
  v1::RunConfig reparsed;
  if (!reparsed.ParseFromString(normalized->SerializeAsString())) std::abort();
  if (!server::DiffRunConfigs(*normalized, reparsed).empty()) std::abort();
  return 0;
}
