// One behavioural test suite for every TelemetryStore implementation, so the
// in-memory twin and the SQLite store cannot drift apart.
//
//   INSTANTIATE_TEST_SUITE_P(
//       Sqlite, TelemetryStoreTest,
//       testing::Values(TelemetryStoreFactory{"sqlite", [](const std::string&
//           dir) { return SqliteTelemetryStore::Open(...).value(); }}));
#ifndef GRADNORM_SERVER_STORE_TELEMETRY_STORE_TEST_SUITE_H_
#define GRADNORM_SERVER_STORE_TELEMETRY_STORE_TEST_SUITE_H_

#include <functional>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

struct TelemetryStoreFactory {
  std::string name;
  // Opens a fresh, empty store; `dir` is an empty directory it may use.
  std::function<std::unique_ptr<TelemetryStore>(const std::string& dir)> open;
};

class TelemetryStoreTest
    : public testing::TestWithParam<TelemetryStoreFactory> {};

// A round record with every field set (partials of `participants` jobs).
RoundRecord MakeRoundRecord(const std::string& run_id, uint64_t step,
                            uint64_t sequence, double total, int participants);

// Appends `record` and waits for its commit callback; returns its status.
absl::Status AppendAndWait(TelemetryStore* store, RoundRecord record);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_TELEMETRY_STORE_TEST_SUITE_H_
