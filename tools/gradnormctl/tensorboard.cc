#include "tools/gradnormctl/tensorboard.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace gradnorm {
namespace gradnormctl {
namespace {

std::array<uint32_t, 256> Crc32cTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int k = 0; k < 8; ++k)
      crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
    table[i] = crc;
  }
  return table;
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutFixed32(uint32_t v, std::string* out) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

void PutFixed64(uint64_t v, std::string* out) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}

// A length-delimited field.
void PutBytes(int field, absl::string_view bytes, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | 2, out);
  PutVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

void PutDouble(int field, double v, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | 1, out);
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  PutFixed64(bits, out);
}

// Summary.Value{tag = 1, simple_value = 2}.
std::string ScalarValue(absl::string_view tag, float value) {
  std::string out;
  PutBytes(1, tag, &out);
  PutVarint((2 << 3) | 5, &out);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  PutFixed32(bits, &out);
  return out;
}

}  // namespace

uint32_t Crc32c(absl::string_view data) {
  static const std::array<uint32_t, 256> table = Crc32cTable();
  uint32_t crc = 0xffffffffu;
  for (unsigned char c : data) crc = table[(crc ^ c) & 0xff] ^ (crc >> 8);
  return crc ^ 0xffffffffu;
}

uint32_t MaskedCrc32c(absl::string_view data) {
  const uint32_t crc = Crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string TfRecord(absl::string_view data) {
  std::string length;
  PutFixed64(data.size(), &length);
  std::string out = length;
  PutFixed32(MaskedCrc32c(length), &out);
  out.append(data.data(), data.size());
  PutFixed32(MaskedCrc32c(data), &out);
  return out;
}

std::string FileVersionEvent(double wall_time) {
  // Event{wall_time = 1, file_version = 3}.
  std::string event;
  PutDouble(1, wall_time, &event);
  PutBytes(3, "brain.Event:2", &event);
  return event;
}

std::string RoundEvent(const v1::RoundResult& round) {
  // Summary{value = 1 (repeated)}.
  std::string summary;
  PutBytes(
      1, ScalarValue("grad_norm/total", static_cast<float>(round.total_norm())),
      &summary);
  PutBytes(
      1,
      ScalarValue("grad_norm/clip_coef", static_cast<float>(round.clip_coef())),
      &summary);
  PutBytes(1,
           ScalarValue("grad_norm/effective_max_norm",
                       static_cast<float>(round.effective_max_norm())),
           &summary);
  PutBytes(1,
           ScalarValue("grad_norm/skipped",
                       round.action() == v1::ACTION_SKIP ? 1.0f : 0.0f),
           &summary);
  // Event{wall_time = 1, step = 2, summary = 5}.
  std::string event;
  PutDouble(1, static_cast<double>(round.finalized_unix_micros()) / 1e6,
            &event);
  PutVarint(2 << 3, &event);
  PutVarint(round.step(), &event);
  PutBytes(5, summary, &event);
  return event;
}

absl::StatusOr<std::string> WriteTensorBoardEvents(
    const std::vector<v1::RoundResult>& rounds, const std::string& dir,
    const std::string& run_id) {
  if (dir.empty()) {
    return absl::InvalidArgumentError(
        "the TensorBoard directory is empty; expected a path");
  }
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  if (error) {
    return absl::UnavailableError(
        absl::StrCat("cannot create ", dir, ": ", error.message()));
  }
  const double now = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  const std::string path =
      absl::StrCat(dir, "/events.out.tfevents.", static_cast<int64_t>(now),
                   ".gradnorm.", run_id);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << TfRecord(FileVersionEvent(now));
  for (const v1::RoundResult& round : rounds)
    out << TfRecord(RoundEvent(round));
  out.flush();
  if (!out) {
    return absl::UnavailableError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  }
  return path;
}

}  // namespace gradnormctl
}  // namespace gradnorm
