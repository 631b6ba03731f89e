#include "server/store/sqlite_schema.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/store/participant_codec.h"
#include "server/store/sqlite_errors.h"
#include "server/store/sqlite_statement.h"

namespace gradnorm {
namespace server {
namespace {

constexpr char kSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  config BLOB NOT NULL,
  created_unix_micros INTEGER NOT NULL,
  finished_unix_micros INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS rounds (
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  step INTEGER NOT NULL,
  sequence INTEGER NOT NULL,
  total_norm REAL,
  clip_coef REAL NOT NULL,
  action INTEGER NOT NULL,
  reason INTEGER NOT NULL,
  reason_detail TEXT NOT NULL,
  effective_max_norm REAL NOT NULL,
  arrival_spread_seconds REAL NOT NULL,
  slowest_participant INTEGER NOT NULL,
  finalized_unix_micros INTEGER NOT NULL,
  participants BLOB NOT NULL,
  exact INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
)sql";

// Schema 3 added the abandoned steps (a schema 1 or 2 file gets the table).
constexpr char kAbandonedSchema[] = R"sql(
CREATE TABLE IF NOT EXISTS abandoned_steps (
  run_id TEXT NOT NULL REFERENCES runs(run_id),
  step INTEGER NOT NULL,
  why TEXT NOT NULL,
  PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
)sql";

// Schema 4 added when a run was finished (0: not finished).
constexpr char kMigrateTo4[] = R"sql(
ALTER TABLE runs ADD COLUMN finished_unix_micros INTEGER NOT NULL DEFAULT 0;
)sql";

// Schema 5 added whether a round's total was summed from exact partials.
constexpr char kMigrateTo5[] = R"sql(
ALTER TABLE rounds ADD COLUMN exact INTEGER NOT NULL DEFAULT 0;
)sql";

// Schema 6 made runs of p = 1 and 2 take exact partials only, unless their
// config says inexact. The runs a schema 1-5 file holds were registered before
// there was a choice, with clients that may send doubles only: they stay
// inexact.
absl::Status MigrateTo6(sqlite3* db) {
  ASSIGN_OR_RETURN(Statement select,
                   PrepareStatement(db, "SELECT run_id, config FROM runs"));
  ASSIGN_OR_RETURN(
      Statement update,
      PrepareStatement(db, "UPDATE runs SET config = ?2 WHERE run_id = ?1"));
  std::vector<std::pair<std::string, std::string>> rewritten;
  sqlite3_stmt* q = select.get();
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    const std::string run_id = ColumnText(q, 0);
    v1::RunConfig config;
    if (!config.ParseFromArray(sqlite3_column_blob(q, 1),
                               sqlite3_column_bytes(q, 1))) {
      return absl::DataLossError(
          absl::StrCat("the config of run ", run_id, " does not parse"));
    }
    config.set_inexact(true);
    rewritten.emplace_back(run_id, config.SerializeAsString());
  }
  if (rc != SQLITE_DONE) return SqliteError(rc, db, "SELECT FROM runs");
  select.reset();
  for (const auto& [run_id, config] : rewritten) {
    sqlite3_bind_text(update.get(), 1, run_id.data(), run_id.size(),
                      SQLITE_STATIC);
    sqlite3_bind_blob(update.get(), 2, config.data(), config.size(),
                      SQLITE_STATIC);
    RETURN_IF_ERROR(StepDone(db, update.get(), "UPDATE runs SET config"));
  }
  return absl::OkStatus();
}

// Schema 1 kept participants in a table of their own, one row each.
constexpr char kMigrateFrom1[] = R"sql(
ALTER TABLE rounds ADD COLUMN participants BLOB NOT NULL DEFAULT x'';
)sql";

absl::Status MigrateFrom1(sqlite3* db) {
  RETURN_IF_ERROR(ExecSql(db, kMigrateFrom1));
  ASSIGN_OR_RETURN(
      Statement select,
      PrepareStatement(db,
                       "SELECT run_id, step, participant, partial, "
                       "arrival_offset_seconds, num_elements FROM participants "
                       "ORDER BY run_id, step, participant"));
  ASSIGN_OR_RETURN(Statement update,
                   PrepareStatement(db,
                                    "UPDATE rounds SET participants = ?3 "
                                    "WHERE run_id = ?1 AND step = ?2"));
  std::string run_id;
  int64_t step = 0;
  std::vector<ParticipantRecord> participants;
  auto write = [&]() -> absl::Status {
    if (participants.empty()) return absl::OkStatus();
    const std::string blob = EncodeParticipants(participants);
    sqlite3_bind_text(update.get(), 1, run_id.data(), run_id.size(),
                      SQLITE_STATIC);
    sqlite3_bind_int64(update.get(), 2, step);
    sqlite3_bind_blob(update.get(), 3, blob.data(), blob.size(), SQLITE_STATIC);
    RETURN_IF_ERROR(
        StepDone(db, update.get(), "UPDATE rounds SET participants"));
    participants.clear();
    return absl::OkStatus();
  };
  sqlite3_stmt* q = select.get();
  int rc;
  while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
    std::string row_run = ColumnText(q, 0);
    const int64_t row_step = sqlite3_column_int64(q, 1);
    if (row_run != run_id || row_step != step) {
      RETURN_IF_ERROR(write());
      run_id = std::move(row_run);
      step = row_step;
    }
    const int64_t index = sqlite3_column_int64(q, 2);
    if (index != static_cast<int64_t>(participants.size())) {
      return absl::DataLossError(absl::StrCat(
          "participant ", index, " of step ", step, " of run ", run_id,
          " is stored without participant ", participants.size()));
    }
    ParticipantRecord p;
    p.partial = ColumnReal(q, 3);
    p.arrival_offset_seconds = sqlite3_column_double(q, 4);
    p.num_elements = static_cast<uint64_t>(sqlite3_column_int64(q, 5));
    participants.push_back(p);
  }
  if (rc != SQLITE_DONE) return SqliteError(rc, db, "SELECT FROM participants");
  RETURN_IF_ERROR(write());
  select.reset();
  return ExecSql(db, "DROP TABLE participants");
}

}  // namespace

absl::Status CreateOrMigrateSchema(sqlite3* db, absl::string_view path) {
  ASSIGN_OR_RETURN(Statement version,
                   PrepareStatement(db, "PRAGMA user_version"));
  int rc = sqlite3_step(version.get());
  if (rc != SQLITE_ROW) return SqliteError(rc, db, "PRAGMA user_version");
  const int found = sqlite3_column_int(version.get(), 0);
  version.reset();
  if (found > kSqliteSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " has schema version ", found, ", newer than this coordinator's ",
        kSqliteSchemaVersion, "; run a newer coordinator"));
  }
  if (found == kSqliteSchemaVersion) return absl::OkStatus();
  if (found == 1) {
    RETURN_IF_ERROR(MigrateFrom1(db));
  } else if (found == 0) {
    RETURN_IF_ERROR(ExecSql(db, kSchema));
  }
  if (found >= 1 && found < 4) RETURN_IF_ERROR(ExecSql(db, kMigrateTo4));
  if (found >= 1 && found < 5) RETURN_IF_ERROR(ExecSql(db, kMigrateTo5));
  if (found >= 1) RETURN_IF_ERROR(MigrateTo6(db));
  RETURN_IF_ERROR(ExecSql(db, kAbandonedSchema));
  return ExecSql(
      db, absl::StrCat("PRAGMA user_version=", kSqliteSchemaVersion).c_str());
}

const char kRoundColumns[] =
    "run_id, step, sequence, total_norm, clip_coef, action, reason, "
    "reason_detail, effective_max_norm, arrival_spread_seconds, "
    "slowest_participant, finalized_unix_micros, participants, exact";
// The same columns with an empty BLOB for the participants (not read).
const char kRoundColumnsWithoutParticipants[] =
    "run_id, step, sequence, total_norm, clip_coef, action, reason, "
    "reason_detail, effective_max_norm, arrival_spread_seconds, "
    "slowest_participant, finalized_unix_micros, x'', exact";

// A row of kRoundColumns.
absl::StatusOr<RoundRecord> RoundFromRow(sqlite3_stmt* q) {
  RoundRecord record;
  v1::RoundResult& r = record.result;
  r.set_run_id(ColumnText(q, 0));
  r.set_step(static_cast<uint64_t>(sqlite3_column_int64(q, 1)));
  record.sequence = static_cast<uint64_t>(sqlite3_column_int64(q, 2));
  r.set_total_norm(ColumnReal(q, 3));
  r.set_clip_coef(sqlite3_column_double(q, 4));
  r.set_action(static_cast<v1::Action>(sqlite3_column_int(q, 5)));
  r.set_reason(static_cast<v1::Reason>(sqlite3_column_int(q, 6)));
  r.set_reason_detail(ColumnText(q, 7));
  r.set_effective_max_norm(sqlite3_column_double(q, 8));
  r.set_arrival_spread_seconds(sqlite3_column_double(q, 9));
  r.set_slowest_participant(static_cast<uint32_t>(sqlite3_column_int64(q, 10)));
  r.set_finalized_unix_micros(sqlite3_column_int64(q, 11));
  r.set_exact(sqlite3_column_int(q, 13) != 0);
  absl::StatusOr<std::vector<ParticipantRecord>> participants =
      DecodeParticipants(absl::string_view(
          static_cast<const char*>(sqlite3_column_blob(q, 12)),
          sqlite3_column_bytes(q, 12)));
  if (!participants.ok()) {
    return absl::DataLossError(absl::StrCat("step ", r.step(), " of run ",
                                            r.run_id(), ": ",
                                            participants.status().message()));
  }
  record.participants = *std::move(participants);
  return record;
}

}  // namespace server
}  // namespace gradnorm
