#include "server/store/memory_telemetry_store.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "server/store/telemetry_store_test_suite.h"

namespace gradnorm {
namespace server {
namespace {

INSTANTIATE_TEST_SUITE_P(
    Memory, TelemetryStoreTest,
    testing::Values(TelemetryStoreFactory{
        "memory",
        [](const std::string&) -> std::unique_ptr<TelemetryStore> {
          return std::make_unique<MemoryTelemetryStore>();
        }}),
    [](const testing::TestParamInfo<TelemetryStoreFactory>& info) {
      return info.param.name;
    });

TEST(MemoryTelemetryStoreTest, ManualModeHoldsRecordsUntilCommitted) {
  MemoryTelemetryStore store(MemoryTelemetryStore::CommitMode::kManual);
  int committed = 0;
  store.AppendRound(MakeRoundRecord("r", 1, 1, 2, 2),
                    [&](absl::Status s) { committed += s.ok(); });
  store.AppendRound(MakeRoundRecord("r", 2, 2, 2, 2),
                    [&](absl::Status s) { committed += s.ok(); });
  EXPECT_EQ(store.pending(), 2u);
  EXPECT_EQ(committed, 0);
  EXPECT_TRUE(store.Load()->rounds.empty());
  EXPECT_EQ(store.CommitPending(), 2u);
  EXPECT_EQ(committed, 2);
  EXPECT_EQ(store.pending(), 0u);
  EXPECT_EQ(store.Load()->rounds.size(), 2u);
}

TEST(MemoryTelemetryStoreTest, FailPendingStoresNothing) {
  MemoryTelemetryStore store(MemoryTelemetryStore::CommitMode::kManual);
  absl::Status seen;
  store.AppendRound(MakeRoundRecord("r", 1, 1, 2, 2),
                    [&](absl::Status s) { seen = s; });
  EXPECT_EQ(store.FailPending(absl::UnavailableError("disk gone")), 1u);
  EXPECT_EQ(seen, absl::UnavailableError("disk gone"));
  EXPECT_TRUE(store.Load()->rounds.empty());
  EXPECT_EQ(store.Flush(), absl::UnavailableError("disk gone"));
}

TEST(MemoryTelemetryStoreTest, FlushCommitsManualRecords) {
  MemoryTelemetryStore store(MemoryTelemetryStore::CommitMode::kManual);
  bool ok = false;
  store.AppendRound(MakeRoundRecord("r", 1, 1, 2, 2),
                    [&](absl::Status s) { ok = s.ok(); });
  EXPECT_TRUE(store.Flush().ok());
  EXPECT_TRUE(ok);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
