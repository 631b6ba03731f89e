// The embedded, durable telemetry store (telemetry_store.h) on SQLite: WAL
// journal, one committer at a time with group commit: the thread that appends
// to an idle store commits right away (no hand-off to another thread on the
// path of a lone round); records appended while a transaction runs go into the
// next one, which the store's writer thread commits, so an appender's (or
// PutRun's) thread commits at most one transaction however long appends keep
// coming. synchronous=NORMAL by default: an
// acknowledged round survives a crash or SIGKILL of the coordinator process;
// synchronous_full also survives power loss, at one fsync per transaction.
//
//   SqliteStoreOptions options;
//   options.path = "gradnorm.db";
//   absl::StatusOr<std::unique_ptr<SqliteTelemetryStore>> store =
//       SqliteTelemetryStore::Open(options);
//
// Schema (user_version 3): runs(run_id, config BLOB (a serialized RunConfig),
// created_unix_micros); rounds(run_id, step, sequence, total_norm, clip_coef,
// action, reason, reason_detail, effective_max_norm, arrival_spread_seconds,
// slowest_participant, finalized_unix_micros, participants BLOB (each
// participant's partial, arrival offset and elements: participant_codec.h)).
// One row, so one B-tree page, per round. abandoned_steps(run_id, step, why):
// steps whose round timed out. NaN totals are stored as NULL (SQLite has no
// NaN); steps are stored as the int64 with the same bits. A version 1 file
// (participants in a table of their own) or 2 (no abandoned steps) is
// migrated at Open, in one transaction.
//
// The coordinator holds the file exclusively while the store is open
// (locking_mode=EXCLUSIVE): other processes read it after the coordinator
// stops, or query it through the coordinator's rpcs; a second store on the same
// file fails at Open.
//
// Thread-safety: every method may be called from any thread concurrently;
// commit callbacks run on the committing thread (an appender's or the writer
// thread), one at a time, in append order. They may append (the record joins a
// later transaction) but must not call PutRun or Flush, which would wait for
// the callback's own thread.
#ifndef GRADNORM_SERVER_STORE_SQLITE_TELEMETRY_STORE_H_
#define GRADNORM_SERVER_STORE_SQLITE_TELEMETRY_STORE_H_

#include <sqlite3.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

struct SqliteStoreOptions {
  // The database file; created (with its tables) when missing.
  std::string path = "gradnorm.db";
  // PRAGMA synchronous=FULL (durable across power loss: one fsync per
  // transaction) or NORMAL (the default: durable across crashes and kills of
  // the process, which is what the protocol's durability promise is about:
  // docs/protocol.md).
  bool synchronous_full = false;
  // How long a statement waits for a lock held by another connection.
  int busy_timeout_ms = 5000;
  // Most records per transaction.
  int max_batch = 4096;
};

class SqliteTelemetryStore final : public TelemetryStore {
 public:
  // Opens or creates the database. Errors:
  // FAILED_PRECONDITION (cannot open the path; a schema newer than this
  // build; another process holds the file, after busy_timeout_ms), DATA_LOSS
  // (not a database, corrupt), PERMISSION_DENIED (read-only), or another
  // translated SQLite error.
  static absl::StatusOr<std::unique_ptr<SqliteTelemetryStore>> Open(
      const SqliteStoreOptions& options);

  // Waits for everything queued to be committed and closes the database.
  ~SqliteTelemetryStore() override;

  SqliteTelemetryStore(const SqliteTelemetryStore&) = delete;
  SqliteTelemetryStore& operator=(const SqliteTelemetryStore&) = delete;

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

  // PRAGMA integrity_check: OK when it reports "ok", else DATA_LOSS with its
  // findings.
  absl::Status CheckIntegrity();

  // Transactions committed so far (fewer than records under load: group
  // commit).
  uint64_t transactions() const;

 private:
  // A run to finish or delete.
  struct RunChange {
    std::string run_id;
    // > 0: finish at this time; 0: delete.
    int64_t finished_unix_micros = 0;
  };
  struct Op;
  struct Statements;

  SqliteTelemetryStore(const SqliteStoreOptions& options, sqlite3* db);
  absl::Status Prepare() ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  void Enqueue(Op op);
  // Enqueues a run or abandoned step and waits for its commit.
  absl::Status EnqueueAndWait(Op op);
  // Commits one batch of queued records (the thread that set committing_).
  void CommitBatch();
  // The writer thread: commits the batches an appender's thread left.
  void WriterLoop();
  // Writes `op` inside the open transaction; a refused record does not undo
  // the others.
  absl::Status WriteOp(const Op& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  // A finish or a delete, under a savepoint: all of it or none.
  absl::Status WriteRunChange(const RunChange& change)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  absl::StatusOr<std::vector<RunRecord>> LoadRunsLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);
  absl::StatusOr<std::vector<AbandonedStep>> LoadAbandonedLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(db_mu_);

  const SqliteStoreOptions options_;

  // Guards the connection: the committer's transactions and
  // Load/CheckIntegrity.
  absl::Mutex db_mu_;
  sqlite3* const db_ ABSL_PT_GUARDED_BY(db_mu_);
  std::unique_ptr<Statements> statements_ ABSL_GUARDED_BY(db_mu_);

  mutable absl::Mutex mu_ ABSL_ACQUIRED_AFTER(db_mu_);
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t transactions_ ABSL_GUARDED_BY(mu_) = 0;
  bool committing_ ABSL_GUARDED_BY(mu_) = false;
  // Set by an appender that committed a batch and found more queued: the
  // writer thread (started then) takes over committing_.
  bool writer_wanted_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread writer_ ABSL_GUARDED_BY(mu_);
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_SQLITE_TELEMETRY_STORE_H_
