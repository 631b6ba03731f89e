#include "server/store/postgres_telemetry_store.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/store/participant_codec.h"
#include "server/store/signed_steps.h"

namespace gradnorm {
namespace server {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS gradnorm_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  config BYTEA NOT NULL,
  created_unix_micros BIGINT NOT NULL,
  finished_unix_micros BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rounds (
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  step BIGINT NOT NULL,
  sequence BIGINT NOT NULL,
  total_norm DOUBLE PRECISION NOT NULL,
  clip_coef DOUBLE PRECISION NOT NULL,
  action INTEGER NOT NULL,
  reason INTEGER NOT NULL,
  reason_detail TEXT NOT NULL,
  effective_max_norm DOUBLE PRECISION NOT NULL,
  arrival_spread_seconds DOUBLE PRECISION NOT NULL,
  slowest_participant BIGINT NOT NULL,
  finalized_unix_micros BIGINT NOT NULL,
  participants BYTEA NOT NULL,
  exact BOOLEAN NOT NULL,
  PRIMARY KEY (run_id, step)
);
CREATE INDEX IF NOT EXISTS rounds_by_sequence ON rounds (run_id, sequence);
CREATE TABLE IF NOT EXISTS abandoned_steps (
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  step BIGINT NOT NULL,
  why TEXT NOT NULL,
  PRIMARY KEY (run_id, step)
);
)sql";

constexpr char kRoundColumns[] =
    "run_id, step, sequence, total_norm, clip_coef, action, reason, "
    "reason_detail, effective_max_norm, arrival_spread_seconds, "
    "slowest_participant, finalized_unix_micros, participants, exact";
// The same with an empty participants column (not read).
constexpr char kRoundColumnsWithoutParticipants[] =
    "run_id, step, sequence, total_norm, clip_coef, action, reason, "
    "reason_detail, effective_max_norm, arrival_spread_seconds, "
    "slowest_participant, finalized_unix_micros, ''::bytea, exact";

// Creates the schema, or checks the stored one, under an advisory lock so
// that coordinators starting together create it once.
absl::Status CreateOrCheckSchema(PgConnection& db) {
  RETURN_IF_ERROR(db.ExecScript("BEGIN"));
  auto body = [&]() -> absl::Status {
    RETURN_IF_ERROR(db.ExecScript(
        "SELECT pg_advisory_xact_lock(7297148541)"));  // "gradnorm"
    // "already exists, skipping" notices are expected: not for stderr.
    RETURN_IF_ERROR(db.ExecScript("SET LOCAL client_min_messages = warning"));
    RETURN_IF_ERROR(db.ExecScript(kSchema));
    ASSIGN_OR_RETURN(PgResult version,
                     db.Exec("SELECT max(version) FROM gradnorm_schema"));
    if (version.IsNull(0, 0)) {
      RETURN_IF_ERROR(db.Exec("INSERT INTO gradnorm_schema VALUES ($1)",
                              {PgParam::Int32(kPostgresSchemaVersion)})
                          .status());
    } else if (version.Int32(0, 0) > kPostgresSchemaVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("the database has gradnorm schema version ",
                       version.Int32(0, 0), ", newer than this coordinator's ",
                       kPostgresSchemaVersion, "; run a newer coordinator"));
    }
    return absl::OkStatus();
  };
  absl::Status status = body();
  if (!status.ok()) {
    db.ExecScript("ROLLBACK").IgnoreError();
    return status;
  }
  return db.ExecScript("COMMIT");
}

absl::StatusOr<RoundRecord> RoundFromRow(const PgResult& r, int row) {
  RoundRecord record;
  v1::RoundResult& result = record.result;
  result.set_run_id(r.Bytes(row, 0));
  result.set_step(static_cast<uint64_t>(r.Int64(row, 1)));
  record.sequence = static_cast<uint64_t>(r.Int64(row, 2));
  result.set_total_norm(r.Float64(row, 3));
  result.set_clip_coef(r.Float64(row, 4));
  result.set_action(static_cast<v1::Action>(r.Int32(row, 5)));
  result.set_reason(static_cast<v1::Reason>(r.Int32(row, 6)));
  result.set_reason_detail(r.Bytes(row, 7));
  result.set_effective_max_norm(r.Float64(row, 8));
  result.set_arrival_spread_seconds(r.Float64(row, 9));
  result.set_slowest_participant(static_cast<uint32_t>(r.Int64(row, 10)));
  result.set_finalized_unix_micros(r.Int64(row, 11));
  result.set_exact(r.Bool(row, 13));
  absl::StatusOr<std::vector<ParticipantRecord>> participants =
      DecodeParticipants(r.Bytes(row, 12));
  if (!participants.ok()) {
    return absl::DataLossError(absl::StrCat("step ", result.step(), " of run ",
                                            result.run_id(), ": ",
                                            participants.status().message()));
  }
  record.participants = *std::move(participants);
  return record;
}

}  // namespace

struct PostgresTelemetryStore::Op {
  // Exactly one of run / round / abandoned / finish or delete (change_run).
  std::optional<RunRecord> run;
  std::optional<RoundRecord> round;
  std::optional<AbandonedStep> abandoned;
  std::optional<std::string> change_run;
  // > 0: finish the run at this time; 0: delete it.
  int64_t finished_unix_micros = 0;
  CommitCallback done;
  absl::Notification* finished = nullptr;
  absl::Status* result = nullptr;
};

PostgresTelemetryStore::PostgresTelemetryStore(
    const PostgresStoreOptions& options, std::unique_ptr<PgConnection> writer,
    std::unique_ptr<PgConnection> reader)
    : options_(options),
      writer_(std::move(writer)),
      reader_(std::move(reader)) {
  thread_ = std::thread([this] { WriterLoop(); });
}

absl::StatusOr<std::unique_ptr<PostgresTelemetryStore>>
PostgresTelemetryStore::Open(const PostgresStoreOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> writer,
                   PgConnection::Connect(options.dsn));
  RETURN_IF_ERROR(CreateOrCheckSchema(*writer));
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> reader,
                   PgConnection::Connect(options.dsn));
  std::unique_ptr<PostgresTelemetryStore> store(new PostgresTelemetryStore(
      options, std::move(writer), std::move(reader)));
  for (;;) {
    absl::Status held;
    {
      absl::MutexLock lock(&store->writer_mu_);
      held = store->HoldLock();
    }
    if (held.ok()) return store;
    if (!options.standby ||
        held.code() != absl::StatusCode::kFailedPrecondition) {
      return held;
    }
    absl::SleepFor(options.standby_poll);
  }
}

absl::Status PostgresTelemetryStore::HoldLock() {
  // A connection found broken by the last statement is reset here, not by
  // the next statement, which would then run without the lock.
  RETURN_IF_ERROR(writer_->EnsureConnected());
  if (locked_connection_ == writer_->connects()) return absl::OkStatus();
  ASSIGN_OR_RETURN(PgResult r, writer_->Exec("SELECT pg_try_advisory_lock($1)",
                                             {PgParam::Int64(kLockKey)}));
  if (!r.Bool(0, 0)) {
    return absl::FailedPreconditionError(
        "another coordinator holds this PostgreSQL database (its advisory "
        "lock); expected one coordinator per database");
  }
  locked_connection_ = writer_->connects();
  return Publish();
}

absl::Status PostgresTelemetryStore::Publish() {
  if (advertised_.empty()) return absl::OkStatus();
  return writer_
      ->Exec(absl::StrCat("SELECT set_config('application_name', $1, false), "
                          "pg_notify('",
                          kLeaderChannel, "', $1)"),
             {PgParam::Text(advertised_)})
      .status();
}

absl::Status PostgresTelemetryStore::Advertise(const std::string& address) {
  // PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes.
  if (address.empty() || address.size() > 63) {
    return absl::InvalidArgumentError(
        absl::StrCat("advertised address '", address, "' has ", address.size(),
                     " bytes; expected host:port of 1 to 63"));
  }
  absl::MutexLock lock(&writer_mu_);
  advertised_ = address;
  RETURN_IF_ERROR(HoldLock());
  return Publish();
}

PostgresTelemetryStore::~PostgresTelemetryStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void PostgresTelemetryStore::Enqueue(Op op) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(op));
  ++enqueued_;
}

absl::Status PostgresTelemetryStore::EnqueueAndWait(Op op) {
  absl::Notification finished;
  absl::Status result;
  op.finished = &finished;
  op.result = &result;
  Enqueue(std::move(op));
  finished.WaitForNotification();
  return result;
}

absl::Status PostgresTelemetryStore::PutRun(const RunRecord& run) {
  Op op;
  op.run = run;
  return EnqueueAndWait(std::move(op));
}

void PostgresTelemetryStore::AppendRound(RoundRecord record,
                                         CommitCallback done) {
  Op op;
  op.round = std::move(record);
  op.done = std::move(done);
  Enqueue(std::move(op));
}

absl::Status PostgresTelemetryStore::PutAbandonedStep(
    const AbandonedStep& step) {
  Op op;
  op.abandoned = step;
  return EnqueueAndWait(std::move(op));
}

absl::Status PostgresTelemetryStore::FinishRun(const std::string& run_id,
                                               int64_t finished_unix_micros) {
  Op op;
  op.change_run = run_id;
  op.finished_unix_micros = finished_unix_micros;
  return EnqueueAndWait(std::move(op));
}

absl::Status PostgresTelemetryStore::DeleteRun(const std::string& run_id) {
  Op op;
  op.change_run = run_id;
  return EnqueueAndWait(std::move(op));
}

absl::Status PostgresTelemetryStore::Flush() {
  absl::MutexLock lock(&mu_);
  const uint64_t target = enqueued_;
  auto done = [this, target]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return completed_ >= target;
  };
  mu_.Await(absl::Condition(&done));
  return first_error_;
}

uint64_t PostgresTelemetryStore::transactions() const {
  absl::MutexLock lock(&mu_);
  return transactions_;
}

void PostgresTelemetryStore::WriterLoop() {
  for (;;) {
    std::vector<Op> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping, with everything committed
      while (!queue_.empty() &&
             batch.size() < static_cast<size_t>(options_.max_batch)) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    const std::vector<absl::Status> statuses = CommitBatch(batch);
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
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].finished == nullptr && !statuses[i].ok() &&
          first_error_.ok()) {
        first_error_ = statuses[i];
      }
    }
    completed_ += batch.size();
  }
}

std::vector<absl::Status> PostgresTelemetryStore::CommitBatch(
    const std::vector<Op>& batch) {
  std::vector<absl::Status> statuses(batch.size());
  absl::MutexLock lock(&writer_mu_);
  // One transaction for the batch (the group commit). A record refused for
  // itself (a duplicate, an unknown run) is answered without an SQL error, so
  // it does not abort the others; any SQL error does, and then each record
  // is retried alone.
  auto all = [&]() -> absl::Status {
    RETURN_IF_ERROR(HoldLock());
    RETURN_IF_ERROR(writer_->ExecScript("BEGIN"));
    for (size_t i = 0; i < batch.size(); ++i) {
      statuses[i] = WriteOp(batch[i]);
      if (!statuses[i].ok() &&
          statuses[i].code() != absl::StatusCode::kAlreadyExists &&
          statuses[i].code() != absl::StatusCode::kNotFound) {
        writer_->ExecScript("ROLLBACK").IgnoreError();
        return statuses[i];
      }
    }
    absl::Status commit = writer_->ExecScript("COMMIT");
    if (!commit.ok()) writer_->ExecScript("ROLLBACK").IgnoreError();
    return commit;
  };
  absl::Status status = all();
  if (status.ok()) {
    absl::MutexLock count(&mu_);
    ++transactions_;
    return statuses;
  }
  if (batch.size() == 1 || status.code() == absl::StatusCode::kUnavailable ||
      status.code() == absl::StatusCode::kFailedPrecondition) {
    // The database is gone (or the one record failed): nothing committed.
    for (absl::Status& s : statuses) s = status;
    return statuses;
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    statuses[i] = writer_->ExecScript("BEGIN");
    if (!statuses[i].ok()) continue;
    statuses[i] = WriteOp(batch[i]);
    absl::Status end =
        writer_->ExecScript(statuses[i].ok() ? "COMMIT" : "ROLLBACK");
    if (statuses[i].ok()) statuses[i] = end;
  }
  return statuses;
}

absl::Status PostgresTelemetryStore::WriteOp(const Op& op) {
  PgConnection& db = *writer_;
  if (op.run.has_value()) {
    const RunRecord& run = *op.run;
    ASSIGN_OR_RETURN(
        PgResult r,
        db.Exec("INSERT INTO runs (run_id, config, created_unix_micros, "
                "finished_unix_micros) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (run_id) DO NOTHING",
                {PgParam::Text(run.run_id),
                 PgParam::Bytes(run.config.SerializeAsString()),
                 PgParam::Int64(run.created_unix_micros),
                 PgParam::Int64(run.finished_unix_micros)}));
    if (r.affected() == 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("run ", run.run_id, " is already stored"));
    }
    return absl::OkStatus();
  }
  if (op.round.has_value()) {
    const RoundRecord& record = *op.round;
    const v1::RoundResult& r = record.result;
    // The run must exist (as a foreign key would say, without aborting the
    // batch's transaction).
    ASSIGN_OR_RETURN(
        PgResult inserted,
        db.Exec(
            "INSERT INTO rounds (run_id, step, sequence, total_norm, "
            "clip_coef, action, reason, reason_detail, effective_max_norm, "
            "arrival_spread_seconds, slowest_participant, "
            "finalized_unix_micros, participants, exact) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
            "$14 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = $1) "
            "ON CONFLICT (run_id, step) DO NOTHING",
            {PgParam::Text(r.run_id()),
             PgParam::Int64(static_cast<int64_t>(r.step())),
             PgParam::Int64(static_cast<int64_t>(record.sequence)),
             PgParam::Float64(r.total_norm()), PgParam::Float64(r.clip_coef()),
             PgParam::Int32(r.action()), PgParam::Int32(r.reason()),
             PgParam::Text(r.reason_detail()),
             PgParam::Float64(r.effective_max_norm()),
             PgParam::Float64(r.arrival_spread_seconds()),
             PgParam::Int64(r.slowest_participant()),
             PgParam::Int64(r.finalized_unix_micros()),
             PgParam::Bytes(EncodeParticipants(record.participants)),
             PgParam::Bool(r.exact())}));
    if (inserted.affected() == 1) return absl::OkStatus();
    ASSIGN_OR_RETURN(PgResult run,
                     db.Exec("SELECT 1 FROM runs WHERE run_id = $1",
                             {PgParam::Text(r.run_id())}));
    if (run.rows() == 0) {
      return absl::NotFoundError(absl::StrCat("round for step ", r.step(),
                                              " of run ", r.run_id(),
                                              ": the run is not stored"));
    }
    return absl::AlreadyExistsError(absl::StrCat("round for step ", r.step(),
                                                 " of run ", r.run_id(),
                                                 " is already stored"));
  }
  if (op.abandoned.has_value()) {
    const AbandonedStep& a = *op.abandoned;
    return db
        .Exec(
            "INSERT INTO abandoned_steps (run_id, step, why) "
            "SELECT $1, $2, $3 WHERE EXISTS "
            "(SELECT 1 FROM runs WHERE run_id = $1) "
            "ON CONFLICT (run_id, step) DO NOTHING",
            {PgParam::Text(a.run_id),
             PgParam::Int64(static_cast<int64_t>(a.step)),
             PgParam::Text(a.why)})
        .status();
  }
  const std::string& run_id = *op.change_run;
  const PgParam id = PgParam::Text(run_id);
  int64_t changed = 0;
  if (op.finished_unix_micros > 0) {
    ASSIGN_OR_RETURN(
        PgResult r,
        db.Exec("UPDATE runs SET finished_unix_micros = $2 WHERE run_id = $1",
                {id, PgParam::Int64(op.finished_unix_micros)}));
    changed = r.affected();
  } else {
    // Rounds and abandoned steps first (they reference the run); with no
    // such run they delete nothing either.
    RETURN_IF_ERROR(
        db.Exec("DELETE FROM abandoned_steps WHERE run_id = $1", {id})
            .status());
    RETURN_IF_ERROR(
        db.Exec("DELETE FROM rounds WHERE run_id = $1", {id}).status());
    ASSIGN_OR_RETURN(PgResult r,
                     db.Exec("DELETE FROM runs WHERE run_id = $1", {id}));
    changed = r.affected();
  }
  if (changed == 0) {
    return absl::NotFoundError(absl::StrCat("run ", run_id, " is not stored"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RunRecord>>
PostgresTelemetryStore::LoadRunsLocked() {
  ASSIGN_OR_RETURN(PgResult r,
                   reader_->Exec("SELECT run_id, config, created_unix_micros, "
                                 "finished_unix_micros FROM runs "
                                 "ORDER BY run_id COLLATE \"C\""));
  std::vector<RunRecord> runs;
  for (int i = 0; i < r.rows(); ++i) {
    RunRecord run;
    run.run_id = r.Bytes(i, 0);
    if (!run.config.ParseFromString(r.Bytes(i, 1))) {
      return absl::DataLossError(
          absl::StrCat("the config of run ", run.run_id, " does not parse"));
    }
    run.created_unix_micros = r.Int64(i, 2);
    run.finished_unix_micros = r.Int64(i, 3);
    runs.push_back(std::move(run));
  }
  return runs;
}

absl::StatusOr<std::vector<AbandonedStep>>
PostgresTelemetryStore::LoadAbandonedLocked() {
  // Steps in unsigned order: the int64 with the uint64's bits, so steps from
  // 2^63 (negative here) come last.
  ASSIGN_OR_RETURN(PgResult r,
                   reader_->Exec("SELECT run_id, step, why FROM "
                                 "abandoned_steps ORDER BY run_id COLLATE "
                                 "\"C\", step < 0, step"));
  std::vector<AbandonedStep> steps;
  for (int i = 0; i < r.rows(); ++i) {
    steps.push_back(AbandonedStep{
        r.Bytes(i, 0), static_cast<uint64_t>(r.Int64(i, 1)), r.Bytes(i, 2)});
  }
  return steps;
}

absl::StatusOr<StoreContents> PostgresTelemetryStore::Load() {
  StoreContents contents;
  absl::MutexLock lock(&reader_mu_);
  ASSIGN_OR_RETURN(contents.runs, LoadRunsLocked());
  ASSIGN_OR_RETURN(contents.abandoned, LoadAbandonedLocked());
  ASSIGN_OR_RETURN(
      PgResult r,
      reader_->Exec(absl::StrCat("SELECT ", kRoundColumns,
                                 " FROM rounds ORDER BY run_id COLLATE \"C\", "
                                 "sequence")));
  for (int i = 0; i < r.rows(); ++i) {
    ASSIGN_OR_RETURN(RoundRecord record, RoundFromRow(r, i));
    contents.rounds.push_back(std::move(record));
  }
  return contents;
}

absl::StatusOr<StoreIndex> PostgresTelemetryStore::LoadIndex() {
  StoreIndex index;
  absl::MutexLock lock(&reader_mu_);
  ASSIGN_OR_RETURN(index.runs, LoadRunsLocked());
  ASSIGN_OR_RETURN(index.abandoned, LoadAbandonedLocked());
  ASSIGN_OR_RETURN(
      PgResult r,
      reader_->Exec("SELECT run_id, step, sequence, total_norm, action, "
                    "reason, effective_max_norm, arrival_spread_seconds, "
                    "finalized_unix_micros FROM rounds "
                    "ORDER BY run_id COLLATE \"C\", sequence"));
  for (int i = 0; i < r.rows(); ++i) {
    index.rounds[r.Bytes(i, 0)].push_back(
        IndexedRound{static_cast<uint64_t>(r.Int64(i, 1)),
                     static_cast<uint64_t>(r.Int64(i, 2)), r.Float64(i, 3),
                     static_cast<v1::Action>(r.Int32(i, 4)),
                     static_cast<v1::Reason>(r.Int32(i, 5)), r.Float64(i, 6),
                     r.Float64(i, 7), r.Int64(i, 8)});
  }
  return index;
}

absl::StatusOr<std::vector<RoundRecord>> PostgresTelemetryStore::ReadRounds(
    const std::string& run_id, uint64_t from_step, uint64_t to_step,
    size_t limit, bool with_participants) {
  std::vector<RoundRecord> rounds;
  if (from_step > to_step) return rounds;
  const std::string sql = absl::StrCat(
      "SELECT ",
      with_participants ? kRoundColumns : kRoundColumnsWithoutParticipants,
      " FROM rounds WHERE run_id = $1 AND step BETWEEN $2 AND $3 "
      "ORDER BY step LIMIT $4");
  absl::MutexLock lock(&reader_mu_);
  for (const auto& [from, to] : SignedStepRanges(from_step, to_step)) {
    const int64_t left = limit == 0
                             ? std::numeric_limits<int64_t>::max()
                             : static_cast<int64_t>(limit - rounds.size());
    ASSIGN_OR_RETURN(
        PgResult r,
        reader_->Exec(sql, {PgParam::Text(run_id), PgParam::Int64(from),
                            PgParam::Int64(to), PgParam::Int64(left)}));
    for (int i = 0; i < r.rows(); ++i) {
      ASSIGN_OR_RETURN(RoundRecord record, RoundFromRow(r, i));
      rounds.push_back(std::move(record));
    }
    if (limit != 0 && rounds.size() >= limit) break;
  }
  return rounds;
}

}  // namespace server
}  // namespace gradnorm
