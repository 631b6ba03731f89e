// Durable norm telemetry: the I/O seam between the coordinator's logic and its
// database. Implementations: MemoryTelemetryStore (memory_telemetry_store.h,
// the in-memory twin for tests), SqliteTelemetryStore
// (sqlite_telemetry_store.h, the embedded default) and PostgresTelemetryStore
// (postgres_telemetry_store.h).
//
// The store is write-mostly. The Aggregator loads everything once at start
// (Load), then appends each finalized round (AppendRound) and answers queries
// from its own memory. A round's result is released to its waiters only after
// the store called back with OK for its record.
//
//   store->AppendRound(std::move(record), [](absl::Status status) {
//     // Runs once, when the record is durable (OK) or definitely not (error).
//   });
//
// Thread-safety: every method may be called from any thread concurrently.
// Commit callbacks run on the committing thread (SQLite: the appender that
// found the store idle, which may be another appender's) or, for the in-memory
// twin in immediate mode, inside AppendRound itself; callers must therefore not
// hold a lock in AppendRound that the callback takes. Callbacks of one store
// never run concurrently with each other and run in the order the records were
// appended.
#ifndef GRADNORM_SERVER_STORE_TELEMETRY_STORE_H_
#define GRADNORM_SERVER_STORE_TELEMETRY_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gradnorm/v1/coordinator.pb.h"

namespace gradnorm {
namespace server {

// A registered run as stored.
struct RunRecord {
  std::string run_id;
  // Validated, with every default filled in (see run_config.h).
  v1::RunConfig config;
  // When the run was registered, microseconds since the Unix epoch.
  int64_t created_unix_micros = 0;
  // When the run was finished (FinishRun), microseconds since the Unix epoch;
  // 0 while it is not.
  int64_t finished_unix_micros = 0;
};

// One participant's report within a finalized round.
struct ParticipantRecord {
  // The reported partial (sum |g|^p, or max |g| for the inf-norm); may be NaN
  // or +Inf.
  double partial = 0.0;
  // Seconds between the round's first report and this participant's, >= 0.
  double arrival_offset_seconds = 0.0;
  // Gradient elements the partial covers (telemetry only; 0 if unknown).
  uint64_t num_elements = 0;
};

// One finalized round, as the Aggregator appends it and Load returns it.
struct RoundRecord {
  // 1-based order in which the run's rounds were finalized. Rounds may finish
  // in any step order; adaptive clip policies replay history in this order so
  // that their state after a restart equals the state before it.
  uint64_t sequence = 0;
  // The result every participant received; run_id and step identify the
  // round. Under NON_FINITE_POLICY_ERROR a non-finite round is stored with
  // action SKIP and reason NONFINITE and its reports fail.
  v1::RoundResult result;
  // Indexed by participant id; size = the run's participants.
  std::vector<ParticipantRecord> participants;
};

// A step whose round timed out: it never gets a result, and a late report of
// it fails (FAILED_PRECONDITION with `why`), also after a restart.
struct AbandonedStep {
  std::string run_id;
  uint64_t step = 0;
  // Why, as reports of the step are told (e.g. the missing participants).
  std::string why;
};

// Everything a store holds.
struct StoreContents {
  // Ordered by run_id.
  std::vector<RunRecord> runs;
  // Ordered by (run_id, sequence).
  std::vector<RoundRecord> rounds;
  // Ordered by (run_id, step).
  std::vector<AbandonedStep> abandoned;
};

// What the Aggregator needs at start of a finalized round: its step (taken),
// what replays the run's policies, and what its history index summarizes
// (history_index.h). The strings and participants stay in the store.
struct IndexedRound {
  uint64_t step = 0;
  uint64_t sequence = 0;
  double total_norm = 0.0;
  v1::Action action = v1::ACTION_UNSPECIFIED;
  v1::Reason reason = v1::REASON_UNSPECIFIED;
  double effective_max_norm = 0.0;
  double arrival_spread_seconds = 0.0;
  int64_t finalized_unix_micros = 0;
};

// The IndexedRound of a finalized round.
inline IndexedRound IndexOf(const v1::RoundResult& r, uint64_t sequence) {
  return IndexedRound{r.step(),
                      sequence,
                      r.total_norm(),
                      r.action(),
                      r.reason(),
                      r.effective_max_norm(),
                      r.arrival_spread_seconds(),
                      r.finalized_unix_micros()};
}

// What the Aggregator loads at start: every run and abandoned step, and an
// index of the rounds, not the rounds themselves (ReadRounds reads those).
struct StoreIndex {
  // Ordered by run_id.
  std::vector<RunRecord> runs;
  // Run id -> its rounds, ordered by sequence (finalization order).
  std::map<std::string, std::vector<IndexedRound>> rounds;
  // Ordered by (run_id, step).
  std::vector<AbandonedStep> abandoned;
};

class TelemetryStore {
 public:
  // Called exactly once per AppendRound: OK once the record is durable, or the
  // error that kept it from being committed (the record is then not stored).
  using CommitCallback = std::function<void(absl::Status)>;

  virtual ~TelemetryStore() = default;

  // Stores a new run and returns once it is durable. Errors: ALREADY_EXISTS
  // (a run with this id is stored), or the database's error translated by
  // sqlite_errors.h (UNAVAILABLE, RESOURCE_EXHAUSTED, DATA_LOSS, INTERNAL).
  virtual absl::Status PutRun(const RunRecord& run) = 0;

  // Queues `record` for commit and returns at once; `done` runs when the
  // record's transaction committed (records queued together share one
  // transaction: group commit) or failed. A (run_id, step) stored before fails
  // with ALREADY_EXISTS. Destroying a store first drains its queue: every
  // callback has run when the destructor returns.
  virtual void AppendRound(RoundRecord record, CommitCallback done) = 0;

  // Stores an abandoned step and returns once it is durable; storing the same
  // (run_id, step) again is a no-op. Errors: the database's, translated.
  virtual absl::Status PutAbandonedStep(const AbandonedStep& step) = 0;

  // Marks a stored run finished at `finished_unix_micros` (> 0) and returns
  // once that is durable. Errors: NOT_FOUND (no such run), the database's,
  // translated.
  virtual absl::Status FinishRun(const std::string& run_id,
                                 int64_t finished_unix_micros) = 0;

  // Deletes a run with its rounds and abandoned steps, all or nothing, and
  // returns once that is durable. Rounds appended for the run but not yet
  // committed may still land: delete only a run that takes no more rounds.
  // Errors: NOT_FOUND (no such run), the database's, translated.
  virtual absl::Status DeleteRun(const std::string& run_id) = 0;

  // Reads every stored run, round and abandoned step. Meant for start-up: call
  // it before the first AppendRound. Errors: the database's, translated.
  virtual absl::StatusOr<StoreContents> Load() = 0;

  // The index of everything stored (see StoreIndex): what the Aggregator
  // reads at start instead of Load, in time and memory proportional to the
  // number of rounds but not to their size. Errors: the database's.
  virtual absl::StatusOr<StoreIndex> LoadIndex() = 0;

  // The committed rounds of `run_id` with steps in [from_step, to_step], in
  // step order, at most `limit` of them (0: no limit); none when from_step >
  // to_step. Without `with_participants` the records' participants are left
  // empty (not read: what a history or a watch needs). May be called
  // concurrently with appends: it sees the rounds committed when it runs.
  // Errors: DATA_LOSS (a round's record does not decode), the database's.
  virtual absl::StatusOr<std::vector<RoundRecord>> ReadRounds(
      const std::string& run_id, uint64_t from_step, uint64_t to_step,
      size_t limit, bool with_participants) = 0;

  // Returns once every record appended before the call has been committed (or
  // failed) and its callback has returned. Returns the first error an
  // AppendRound got since the store opened, OK if there was none.
  virtual absl::Status Flush() = 0;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_TELEMETRY_STORE_H_
