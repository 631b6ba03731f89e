// The telemetry store (telemetry_store.h) on PostgreSQL, through libpq: for
// coordinators whose history must outlive their machine and be queried in SQL
// while they run (Grafana, psql).
//
//   PostgresStoreOptions options;
//   options.dsn = "host=db.example port=5432 dbname=gradnorm user=gradnorm";
//   absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> store =
//       PostgresTelemetryStore::Open(options);
//
// Schema (gradnorm_schema.version 1), created at Open when missing:
//   runs(run_id TEXT PRIMARY KEY, config BYTEA (a serialized RunConfig),
//        created_unix_micros BIGINT, finished_unix_micros BIGINT, 0: not);
//   rounds(run_id, step BIGINT, sequence BIGINT, total_norm DOUBLE PRECISION
//        (NaN and Infinity as themselves), clip_coef, action INTEGER
//        (gradnorm.v1.Action), reason INTEGER (gradnorm.v1.Reason),
//        reason_detail TEXT, effective_max_norm, arrival_spread_seconds,
//        slowest_participant BIGINT, finalized_unix_micros BIGINT,
//        participants BYTEA (participant_codec.h), exact BOOLEAN,
//        PRIMARY KEY (run_id, step));
//   abandoned_steps(run_id, step, why TEXT, PRIMARY KEY (run_id, step)).
// Steps are the int64 with the uint64's bits. Every column a dashboard needs
// is a plain column.
//
// One coordinator per database: the write connection holds a session
// advisory lock, taken at Open and again after each reconnection; a second
// coordinator on the same database fails at Open (FAILED_PRECONDITION), or,
// as a standby, waits there until the first is gone (its session ends when
// its process dies), and a coordinator that lost the lock to another fails
// its writes the same way.
//
// Replicas (--replica): the holder advertises where it serves forwarded calls
// (Advertise): its write session's application_name is that host:port, and
// NOTIFY gradnorm_leader tells the replicas waiting for one
// (postgres_leader_directory.h). It advertises again after a reconnection.
//
// Writes go through one connection and a writer thread that commits what is
// queued in one transaction (group commit); PostgreSQL's own durability
// (synchronous_commit, replication) decides what an acknowledged commit
// survives. Reads use a second connection. A lost connection is re-made on
// the next statement; while the database is unreachable, calls fail with
// UNAVAILABLE.
//
// Thread-safety: every method may be called from any thread concurrently;
// commit callbacks run on the writer thread, one at a time, in append order.
// They must not call PutRun, FinishRun, DeleteRun, PutAbandonedStep or Flush.
#ifndef GRADNORM_SERVER_STORE_POSTGRES_TELEMETRY_STORE_H_
#define GRADNORM_SERVER_STORE_POSTGRES_TELEMETRY_STORE_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/postgres_connection.h"
#include "server/store/telemetry_store.h"

namespace gradnorm {
namespace server {

struct PostgresStoreOptions {
  // libpq connection string or postgresql:// URI.
  std::string dsn;
  // Most records per transaction.
  int max_batch = 4096;
  // A standby: when another coordinator holds the database, Open waits (trying
  // every `standby_poll`) until it is gone and then opens, instead of failing.
  bool standby = false;
  absl::Duration standby_poll = absl::Milliseconds(200);
};

// The schema version this build writes; a database with a newer one is
// refused at Open.
inline constexpr int kPostgresSchemaVersion = 1;

class PostgresTelemetryStore final : public TelemetryStore {
 public:
  // Connects (twice: writes and reads) and creates the schema when missing.
  // Errors: UNAVAILABLE (server unreachable), INVALID_ARGUMENT (the DSN does
  // not parse), PERMISSION_DENIED (refused), FAILED_PRECONDITION (a newer
  // schema), or another translated PostgreSQL error.
  static absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>> Open(
      const PostgresStoreOptions& options);

  // Waits for everything queued to be committed, then disconnects.
  ~PostgresTelemetryStore() override;

  PostgresTelemetryStore(const PostgresTelemetryStore&) = delete;
  PostgresTelemetryStore& operator=(const PostgresTelemetryStore&) = delete;

  absl::Status PutRun(const RunRecord& run) override;
  void AppendRound(RoundRecord record, CommitCallback done) override;
  absl::Status PutAbandonedStep(const AbandonedStep& step) override;
  absl::Status FinishRun(const std::string& run_id,
                         int64_t finished_unix_micros) override;
  absl::Status DeleteRun(const std::string& run_id) override;
  absl::StatusOr<StoreContents> Load() override;
  absl::StatusOr<StoreIndex> LoadIndex() override;
  absl::StatusOr<std::vector<RoundRecord>> ReadRounds(
      const std::string& run_id, uint64_t from_step, uint64_t to_step,
      size_t limit, bool with_participants) override;
  absl::Status Flush() override;

  // Transactions committed so far.
  uint64_t transactions() const;

  // Makes `address` (host:port, at most 63 bytes) the one replicas forward
  // to while this store holds the database (see above), now and after each
  // reconnection. INVALID_ARGUMENT for a longer address; UNAVAILABLE when
  // the database cannot be reached.
  absl::Status Advertise(const std::string& address);

  // The key of the session advisory lock that makes one coordinator the
  // database's writer.
  static constexpr int64_t kLockKey = 7297148542;
  // The channel a new holder notifies, with its address as the payload.
  static constexpr char kLeaderChannel[] = "gradnorm_leader";

 private:
  struct Op;

  PostgresTelemetryStore(const PostgresStoreOptions& options,
                         std::unique_ptr<PgConnection> writer,
                         std::unique_ptr<PgConnection> reader);
  void Enqueue(Op op);
  absl::Status EnqueueAndWait(Op op);
  void WriterLoop();
  // Commits `batch` in one transaction; when a statement fails for another
  // reason than its own record's, each record gets a transaction of its own,
  // so one bad record does not fail the others.
  std::vector<absl::Status> CommitBatch(const std::vector<Op>& batch);
  absl::Status WriteOp(const Op& op) ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Takes the database's coordinator lock on the write connection when it is
  // a new connection.
  absl::Status HoldLock() ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  // Publishes advertised_ on the write session, when set.
  absl::Status Publish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(writer_mu_);
  absl::StatusOr<std::vector<RunRecord>> LoadRunsLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reader_mu_);
  absl::StatusOr<std::vector<AbandonedStep>> LoadAbandonedLocked()
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(reader_mu_);

  const PostgresStoreOptions options_;

  absl::Mutex writer_mu_;
  const std::unique_ptr<PgConnection> writer_ ABSL_PT_GUARDED_BY(writer_mu_);
  // writer_->connects() when the lock was last taken.
  uint64_t locked_connection_ ABSL_GUARDED_BY(writer_mu_) = 0;
  // Advertise's address; empty: none.
  std::string advertised_ ABSL_GUARDED_BY(writer_mu_);
  absl::Mutex reader_mu_;
  const std::unique_ptr<PgConnection> reader_ ABSL_PT_GUARDED_BY(reader_mu_);

  mutable absl::Mutex mu_;
  std::deque<Op> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t enqueued_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t completed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t transactions_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_POSTGRES_TELEMETRY_STORE_H_
