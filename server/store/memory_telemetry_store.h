// The in-memory twin of the telemetry store (telemetry_store.h), for tests and
// for running a coordinator without durability.
//
//   MemoryTelemetryStore store(MemoryTelemetryStore::CommitMode::kManual);
//   aggregator->Report(...);       // the round finalizes, its record waits
//   EXPECT_EQ(store.pending(), 1);  // no waiter has been answered yet
//   store.CommitPending();         // now they are
//
// In kImmediate mode (the default) AppendRound commits and runs the callback
// before it returns. In kManual mode records wait until CommitPending() or
// FailPending(); Flush() commits them.
//
// Thread-safety: every method may be called from any thread concurrently;
// callbacks run one at a time, in append order.
#ifndef GRADNORM_SERVER_STORE_MEMORY_TELEMETRY_STORE_H_
#define GRADNORM_SERVER_STORE_MEMORY_TELEMETRY_STORE_H_

#include <cstddef>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

class MemoryTelemetryStore final : public TelemetryStore {
 public:
  enum class CommitMode { kImmediate, kManual };

  explicit MemoryTelemetryStore(CommitMode mode = CommitMode::kImmediate);
  ~MemoryTelemetryStore() override;

  MemoryTelemetryStore(const MemoryTelemetryStore&) = delete;
  MemoryTelemetryStore& operator=(const MemoryTelemetryStore&) = delete;

  absl::Status PutRun(const RunRecord& run) override;
  absl::Status PutAbandonedStep(const AbandonedStep& step) override;
  absl::Status FinishRun(const std::string& run_id,
                         int64_t finished_unix_micros) override;
  absl::Status DeleteRun(const std::string& run_id) override;
  absl::StatusOr<StoreIndex> LoadIndex() override;
  absl::StatusOr<std::vector<RoundRecord>> ReadRounds(
      const std::string& run_id, uint64_t from_step, uint64_t to_step,
      size_t limit, bool with_participants) override;
  void AppendRound(RoundRecord record, CommitCallback done) override;
  absl::StatusOr<StoreContents> Load() override;
  absl::Status Flush() override;

  // Commits every waiting record, in append order, running each callback
  // with OK (or ALREADY_EXISTS for a (run_id, step) stored before). Returns
  // how many records it committed or rejected.
  size_t CommitPending();
  // Fails every waiting record with `status`; they are not stored.
  size_t FailPending(const absl::Status& status);
  // Records appended but not yet committed or failed.
  size_t pending() const;

 private:
  struct Pending {
    RoundRecord record;
    CommitCallback done;
  };
  // Stores `record` (or refuses a duplicate) and returns the callback's status.
  absl::Status Commit(RoundRecord record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t Drain(const absl::Status* failure);

  const CommitMode mode_;
  // Serializes callbacks so they run one at a time and in append order; taken
  // before mu_, never while a caller's lock is held.
  absl::Mutex callback_mu_;
  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(callback_mu_);
  std::map<std::string, RunRecord> runs_ ABSL_GUARDED_BY(mu_);
  // (run_id, step) -> record.
  std::map<std::pair<std::string, uint64_t>, RoundRecord> rounds_
      ABSL_GUARDED_BY(mu_);
  std::deque<Pending> pending_ ABSL_GUARDED_BY(mu_);
  // (run_id, step) -> why.
  std::map<std::pair<std::string, uint64_t>, std::string> abandoned_
      ABSL_GUARDED_BY(mu_);
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_MEMORY_TELEMETRY_STORE_H_
