#include "server/store/sqlite_telemetry_store.h"

#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "server/store/participant_codec.h"
#include "server/store/sqlite_errors.h"
#include "server/store/sqlite_schema.h"
#include "server/store/sqlite_statement.h"

// The SQLite store's writes: opening the file, the writer and its group
// commits. Its reads are in sqlite_store_reads.cc.
namespace gradnorm {
namespace server {

struct SqliteTelemetryStore::Op {
  // Exactly one of run / round / abandoned / change.
  std::optional<RunRecord> run;
  std::optional<RoundRecord> round;
  std::optional<AbandonedStep> abandoned;
  std::optional<RunChange> change;
  // For rounds.
  CommitCallback done;
  // For runs and abandoned steps: PutRun / PutAbandonedStep wait here.
  absl::Notification* finished = nullptr;
  absl::Status* result = nullptr;
};

struct SqliteTelemetryStore::Statements {
  Statement insert_run;
  Statement insert_round;
  Statement insert_abandoned;
  Statement finish_run;
  Statement delete_abandoned;
  Statement delete_rounds;
  Statement delete_run;
  Statement savepoint;
  Statement release;
  Statement rollback_to;
  // Transaction control, prepared once: parsing them on every commit costs
  // as much as the inserts.
  Statement begin;
  Statement commit;
  Statement rollback;
};

SqliteTelemetryStore::SqliteTelemetryStore(const SqliteStoreOptions& options,
                                           sqlite3* db)
    : options_(options), db_(db) {}

absl::StatusOr<std::unique_ptr<SqliteTelemetryStore>>
SqliteTelemetryStore::Open(const SqliteStoreOptions& options) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(
      options.path.c_str(), &db,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status =
        SqliteError(rc, db, absl::StrCat("open ", options.path));
    sqlite3_close(db);
    return status;
  }
  sqlite3_extended_result_codes(db, 1);
  std::unique_ptr<SqliteTelemetryStore> store(
      new SqliteTelemetryStore(options, db));
  {
    absl::MutexLock lock(&store->db_mu_);
    if (absl::Status status = store->Prepare(); !status.ok()) return status;
  }
  return store;
}

absl::Status SqliteTelemetryStore::Prepare() {
  sqlite3_busy_timeout(db_, options_.busy_timeout_ms);
  // One coordinator owns the file while it runs. EXCLUSIVE locking, set
  // before WAL is entered, keeps the WAL index in this process's memory (no
  // shared-memory file, no file locks per transaction: a third of a small
  // commit) and makes a second coordinator on the same file fail here instead
  // of finalizing rounds beside the first.
  RETURN_IF_ERROR(ExecSql(db_, "PRAGMA locking_mode=EXCLUSIVE"));
  // The first statement that reads the file takes the lock. journal_mode
  // returns a row; sqlite3_exec discards it.
  int rc =
      sqlite3_exec(db_, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
  if ((rc & 0xff) == SQLITE_BUSY) {
    return absl::FailedPreconditionError(absl::StrCat(
        options_.path,
        " is locked by another process (another coordinator on the "
        "same database?); waited ",
        options_.busy_timeout_ms,
        " ms. Expected a database no other process has open"));
  }
  if (rc != SQLITE_OK) return SqliteError(rc, db_, "PRAGMA journal_mode=WAL");
  RETURN_IF_ERROR(ExecSql(db_, options_.synchronous_full
                                   ? "PRAGMA synchronous=FULL"
                                   : "PRAGMA synchronous=NORMAL"));
  RETURN_IF_ERROR(ExecSql(db_, "PRAGMA foreign_keys=ON"));

  RETURN_IF_ERROR(ExecSql(db_, "BEGIN IMMEDIATE"));
  absl::Status created = CreateOrMigrateSchema(db_, options_.path);
  if (!created.ok()) {
    ExecSql(db_, "ROLLBACK").IgnoreError();
    return created;
  }
  RETURN_IF_ERROR(ExecSql(db_, "COMMIT"));

  statements_ = std::make_unique<Statements>();
  struct {
    Statement* slot;
    const char* sql;
  } const prepared[] = {
      {&statements_->insert_run,
       "INSERT INTO runs (run_id, config, created_unix_micros) "
       "VALUES (?1, ?2, ?3)"},
      {&statements_->insert_round,
       "INSERT INTO rounds (run_id, step, sequence, total_norm, clip_coef, "
       "action, reason, reason_detail, effective_max_norm, "
       "arrival_spread_seconds, slowest_participant, finalized_unix_micros, "
       "participants, exact) "
       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"},
      {&statements_->insert_abandoned,
       "INSERT OR IGNORE INTO abandoned_steps (run_id, step, why) "
       "VALUES (?1, ?2, ?3)"},
      {&statements_->finish_run,
       "UPDATE runs SET finished_unix_micros = ?2 WHERE run_id = ?1"},
      {&statements_->delete_abandoned,
       "DELETE FROM abandoned_steps WHERE run_id = ?1"},
      {&statements_->delete_rounds, "DELETE FROM rounds WHERE run_id = ?1"},
      {&statements_->delete_run, "DELETE FROM runs WHERE run_id = ?1"},
      {&statements_->savepoint, "SAVEPOINT run_change"},
      {&statements_->release, "RELEASE run_change"},
      {&statements_->rollback_to, "ROLLBACK TO run_change"},
      {&statements_->begin, "BEGIN IMMEDIATE"},
      {&statements_->commit, "COMMIT"},
      {&statements_->rollback, "ROLLBACK"},
  };
  for (const auto& p : prepared) {
    absl::StatusOr<Statement> statement = PrepareStatement(db_, p.sql);
    if (!statement.ok()) return statement.status();
    *p.slot = *std::move(statement);
  }
  return absl::OkStatus();
}

SqliteTelemetryStore::~SqliteTelemetryStore() {
  std::thread writer;
  {
    // A committer may still be draining on another thread.
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return !committing_ && queue_.empty();
    };
    mu_.Await(absl::Condition(&idle));
    stopping_ = true;
    writer = std::move(writer_);
  }
  if (writer.joinable()) writer.join();
  absl::MutexLock lock(&db_mu_);
  statements_.reset();
  sqlite3_close(db_);
}

void SqliteTelemetryStore::Enqueue(Op op) {
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(op));
    ++enqueued_;
    // A commit is running: its committer takes this record into the next
    // transaction (group commit).
    if (committing_) return;
    committing_ = true;
  }
  // No commit is running: this thread commits, saving the hand-off to a
  // writer thread and back that would otherwise dominate a round's latency.
  CommitBatch();
  absl::MutexLock lock(&mu_);
  if (queue_.empty()) {
    committing_ = false;
    return;
  }
  // More came meanwhile: the writer thread commits it, so this caller (a gRPC
  // handler, or PutRun waiting for its run) is not held as long as appends
  // keep coming.
  writer_wanted_ = true;
  if (!writer_.joinable()) writer_ = std::thread([this] { WriterLoop(); });
}

void SqliteTelemetryStore::WriterLoop() {
  mu_.Lock();
  while (true) {
    auto woken = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return writer_wanted_ || stopping_;
    };
    mu_.Await(absl::Condition(&woken));
    if (!writer_wanted_) break;  // Stopping, with nothing left.
    writer_wanted_ = false;
    while (!queue_.empty()) {
      mu_.Unlock();
      CommitBatch();
      mu_.Lock();
    }
    committing_ = false;
  }
  mu_.Unlock();
}

absl::Status SqliteTelemetryStore::PutRun(const RunRecord& run) {
  Op op;
  op.run = run;
  return EnqueueAndWait(std::move(op));
}

absl::Status SqliteTelemetryStore::PutAbandonedStep(const AbandonedStep& step) {
  Op op;
  op.abandoned = step;
  return EnqueueAndWait(std::move(op));
}

absl::Status SqliteTelemetryStore::FinishRun(const std::string& run_id,
                                             int64_t finished_unix_micros) {
  Op op;
  op.change = RunChange{run_id, finished_unix_micros};
  return EnqueueAndWait(std::move(op));
}

absl::Status SqliteTelemetryStore::DeleteRun(const std::string& run_id) {
  Op op;
  op.change = RunChange{run_id, 0};
  return EnqueueAndWait(std::move(op));
}

absl::Status SqliteTelemetryStore::EnqueueAndWait(Op op) {
  absl::Notification finished;
  absl::Status result;
  op.finished = &finished;
  op.result = &result;
  Enqueue(std::move(op));
  finished.WaitForNotification();
  return result;
}

void SqliteTelemetryStore::AppendRound(RoundRecord record,
                                       CommitCallback done) {
  Op op;
  op.round = std::move(record);
  op.done = std::move(done);
  Enqueue(std::move(op));
}

absl::Status SqliteTelemetryStore::Flush() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = enqueued_;
  auto done = [this, target]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return completed_ >= target;
  };
  mu_.Await(absl::Condition(&done));
  return first_error_;
}

uint64_t SqliteTelemetryStore::transactions() const {
  absl::MutexLock lock(&mu_);
  return transactions_;
}

absl::Status SqliteTelemetryStore::WriteOp(const Op& op) {
  // Bound values outlive the step (StepDone clears the bindings), so none is
  // copied. Each record is one INSERT; a refused INSERT undoes only itself (ON
  // CONFLICT ABORT), so one bad record leaves the others of its batch intact.
  absl::Status status;
  if (op.change.has_value()) return WriteRunChange(*op.change);
  if (op.abandoned.has_value()) {
    sqlite3_stmt* s = statements_->insert_abandoned.get();
    const AbandonedStep& a = *op.abandoned;
    sqlite3_bind_text(s, 1, a.run_id.data(), a.run_id.size(), SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, static_cast<int64_t>(a.step));
    sqlite3_bind_text(s, 3, a.why.data(), a.why.size(), SQLITE_STATIC);
    return StepDone(db_, s, "INSERT INTO abandoned_steps");
  }
  if (op.run.has_value()) {
    sqlite3_stmt* s = statements_->insert_run.get();
    const RunRecord& run = *op.run;
    std::string config = run.config.SerializeAsString();
    sqlite3_bind_text(s, 1, run.run_id.data(), run.run_id.size(),
                      SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, config.data(), config.size(), SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, run.created_unix_micros);
    status = StepDone(db_, s, "INSERT INTO runs");
    if (status.code() == absl::StatusCode::kAlreadyExists) {
      status = absl::AlreadyExistsError(
          absl::StrCat("run ", run.run_id, " is already stored"));
    }
  } else {
    const RoundRecord& record = *op.round;
    const v1::RoundResult& r = record.result;
    const int64_t step = static_cast<int64_t>(r.step());
    sqlite3_stmt* s = statements_->insert_round.get();
    sqlite3_bind_text(s, 1, r.run_id().data(), r.run_id().size(),
                      SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, step);
    sqlite3_bind_int64(s, 3, static_cast<int64_t>(record.sequence));
    BindReal(s, 4, r.total_norm());
    sqlite3_bind_double(s, 5, r.clip_coef());
    sqlite3_bind_int(s, 6, r.action());
    sqlite3_bind_int(s, 7, r.reason());
    sqlite3_bind_text(s, 8, r.reason_detail().data(), r.reason_detail().size(),
                      SQLITE_STATIC);
    sqlite3_bind_double(s, 9, r.effective_max_norm());
    sqlite3_bind_double(s, 10, r.arrival_spread_seconds());
    sqlite3_bind_int64(s, 11, r.slowest_participant());
    sqlite3_bind_int64(s, 12, r.finalized_unix_micros());
    const std::string participants = EncodeParticipants(record.participants);
    sqlite3_bind_blob(s, 13, participants.data(), participants.size(),
                      SQLITE_STATIC);
    sqlite3_bind_int(s, 14, r.exact() ? 1 : 0);
    status = StepDone(db_, s, "INSERT INTO rounds");
    if (status.code() == absl::StatusCode::kAlreadyExists) {
      status = absl::AlreadyExistsError(
          absl::StrCat("round for step ", r.step(), " of run ", r.run_id(),
                       " is already stored"));
    }
  }
  return status;
}

absl::Status SqliteTelemetryStore::WriteRunChange(const RunChange& change) {
  // A savepoint makes the change all or nothing within the batch's
  // transaction: a delete that fails halfway leaves the run whole.
  RETURN_IF_ERROR(
      StepDone(db_, statements_->savepoint.get(), "SAVEPOINT run_change"));
  auto run_statement = [&](sqlite3_stmt* s, absl::string_view call) {
    sqlite3_bind_text(s, 1, change.run_id.data(), change.run_id.size(),
                      SQLITE_STATIC);
    if (change.finished_unix_micros > 0) {
      sqlite3_bind_int64(s, 2, change.finished_unix_micros);
    }
    return StepDone(db_, s, call);
  };
  absl::Status status;
  if (change.finished_unix_micros > 0) {
    status = run_statement(statements_->finish_run.get(), "UPDATE runs");
  } else {
    status = run_statement(statements_->delete_abandoned.get(),
                           "DELETE FROM abandoned_steps");
    if (status.ok()) {
      status =
          run_statement(statements_->delete_rounds.get(), "DELETE FROM rounds");
    }
    if (status.ok()) {
      status = run_statement(statements_->delete_run.get(), "DELETE FROM runs");
    }
  }
  if (status.ok() && sqlite3_changes(db_) == 0) {
    status = absl::NotFoundError(
        absl::StrCat("run ", change.run_id, " is not stored"));
  }
  if (!status.ok()) {
    StepDone(db_, statements_->rollback_to.get(), "ROLLBACK TO run_change")
        .IgnoreError();
  }
  absl::Status released =
      StepDone(db_, statements_->release.get(), "RELEASE run_change");
  return status.ok() ? released : status;
}

void SqliteTelemetryStore::CommitBatch() {
  std::vector<Op> batch;
  {
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) return;
    while (!queue_.empty() &&
           batch.size() < static_cast<size_t>(options_.max_batch)) {
      batch.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
  }
  std::vector<absl::Status> statuses(batch.size());
  bool committed = false;
  {
    absl::MutexLock lock(&db_mu_);
    absl::Status begin =
        StepDone(db_, statements_->begin.get(), "BEGIN IMMEDIATE");
    if (!begin.ok()) {
      for (absl::Status& s : statuses) s = begin;
    } else {
      for (size_t i = 0; i < batch.size(); ++i) {
        statuses[i] = WriteOp(batch[i]);
      }
      // One fsync for the whole batch: this is the group commit.
      absl::Status commit = StepDone(db_, statements_->commit.get(), "COMMIT");
      if (!commit.ok()) {
        StepDone(db_, statements_->rollback.get(), "ROLLBACK").IgnoreError();
        for (absl::Status& s : statuses) {
          if (s.ok()) s = commit;
        }
      } else {
        committed = true;
      }
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    Op& op = batch[i];
    if (op.finished != nullptr) {
      *op.result = statuses[i];
      op.finished->Notify();
    } else if (op.done) {
      op.done(statuses[i]);
    }
  }
  absl::MutexLock lock(&mu_);
  if (committed) ++transactions_;
  // Only appended rounds count: the callers of the other operations were
  // answered with their own status.
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].finished == nullptr && !statuses[i].ok() &&
        first_error_.ok()) {
      first_error_ = statuses[i];
    }
  }
  completed_ += batch.size();
}

}  // namespace server
}  // namespace gradnorm
