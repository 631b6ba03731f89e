// Fuzzes opening a coordinator database: the input is written as the file,
// then SqliteTelemetryStore::Open and Load run on it, as a coordinator's start
// would on a corrupted or truncated file. Either succeeds, or fails with a
// status that has a message; a crash, hang or sanitizer report is a finding.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/store/sqlite_telemetry_store.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gradnorm::server;
  static const std::string path = [] {
    const char* dir = std::getenv("TEST_TMPDIR");
    return absl::StrCat(dir != nullptr ? dir : "/tmp", "/gradnorm_fuzz_",
                        getpid(), ".db");
  }();
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) {
    std::remove((path + suffix).c_str());
  }
  {
    FILE* file = std::fopen(path.c_str(), "wb");
    if (file == nullptr) std::abort();
    if (size > 0 && std::fwrite(data, 1, size, file) != size) std::abort();
    std::fclose(file);
  }
  SqliteStoreOptions options;
  options.path = path;
  options.busy_timeout_ms = 0;
  auto store = SqliteTelemetryStore::Open(options);
  if (!store.ok()) {
    if (store.status().message().empty()) std::abort();
    return 0;
  }
  auto contents = (*store)->Load();
  if (!contents.ok() && contents.status().message().empty()) std::abort();
  return 0;
}
