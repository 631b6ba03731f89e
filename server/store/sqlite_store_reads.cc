// The SQLite store's reads: loading runs, abandoned steps and the round
// index at start, reading rounds back, and the integrity check (see
// sqlite_telemetry_store.h). Its writes are in sqlite_telemetry_store.cc.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "server/store/participant_codec.h"
#include "server/store/signed_steps.h"
#include "server/store/sqlite_errors.h"
#include "server/store/sqlite_schema.h"
#include "server/store/sqlite_statement.h"
#include "server/store/sqlite_telemetry_store.h"

namespace gradnorm {
namespace server {

absl::StatusOr<std::vector<RunRecord>> SqliteTelemetryStore::LoadRunsLocked() {
  std::vector<RunRecord> runs;
  ASSIGN_OR_RETURN(
      Statement s,
      PrepareStatement(db_,
                       "SELECT run_id, config, created_unix_micros, "
                       "finished_unix_micros FROM runs ORDER BY run_id"));
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    RunRecord run;
    run.run_id = ColumnText(s.get(), 0);
    const void* blob = sqlite3_column_blob(s.get(), 1);
    const int size = sqlite3_column_bytes(s.get(), 1);
    if (!run.config.ParseFromArray(blob, size)) {
      return absl::DataLossError(
          absl::StrCat("the stored config of run ", run.run_id,
                       " is not a valid gradnorm.v1.RunConfig"));
    }
    run.created_unix_micros = sqlite3_column_int64(s.get(), 2);
    run.finished_unix_micros = sqlite3_column_int64(s.get(), 3);
    runs.push_back(std::move(run));
  }
  if (rc != SQLITE_DONE) return SqliteError(rc, db_, "SELECT FROM runs");
  return runs;
}

absl::StatusOr<std::vector<AbandonedStep>>
SqliteTelemetryStore::LoadAbandonedLocked() {
  std::vector<AbandonedStep> abandoned;
  ASSIGN_OR_RETURN(
      Statement s,
      PrepareStatement(db_,
                       "SELECT run_id, step, why FROM abandoned_steps "
                       "ORDER BY run_id, step"));
  int rc;
  while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
    abandoned.push_back(
        AbandonedStep{ColumnText(s.get(), 0),
                      static_cast<uint64_t>(sqlite3_column_int64(s.get(), 1)),
                      ColumnText(s.get(), 2)});
  }
  if (rc != SQLITE_DONE)
    return SqliteError(rc, db_, "SELECT FROM abandoned_steps");
  // Steps are stored as signed 64-bit integers: put those >= 2^63 last.
  std::stable_sort(abandoned.begin(), abandoned.end(),
                   [](const AbandonedStep& a, const AbandonedStep& b) {
                     return a.run_id != b.run_id ? a.run_id < b.run_id
                                                 : a.step < b.step;
                   });
  return abandoned;
}

absl::StatusOr<StoreContents> SqliteTelemetryStore::Load() {
  absl::MutexLock lock(&db_mu_);
  StoreContents contents;
  ASSIGN_OR_RETURN(contents.runs, LoadRunsLocked());
  {
    ASSIGN_OR_RETURN(
        Statement s,
        PrepareStatement(db_,
                         absl::StrCat("SELECT ", kRoundColumns,
                                      " FROM rounds ORDER BY run_id, sequence")
                             .c_str()));
    int rc;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      ASSIGN_OR_RETURN(RoundRecord record, RoundFromRow(s.get()));
      contents.rounds.push_back(std::move(record));
    }
    if (rc != SQLITE_DONE) return SqliteError(rc, db_, "SELECT FROM rounds");
  }
  ASSIGN_OR_RETURN(contents.abandoned, LoadAbandonedLocked());
  return contents;
}

absl::StatusOr<StoreIndex> SqliteTelemetryStore::LoadIndex() {
  absl::MutexLock lock(&db_mu_);
  StoreIndex index;
  ASSIGN_OR_RETURN(index.runs, LoadRunsLocked());
  {
    // Small columns in primary-key order: neither the participants BLOB nor
    // the strings are read.
    ASSIGN_OR_RETURN(
        Statement s,
        PrepareStatement(db_,
                         "SELECT run_id, step, sequence, total_norm, action, "
                         "reason, effective_max_norm, arrival_spread_seconds, "
                         "finalized_unix_micros FROM rounds"));
    int rc;
    std::string run_id;
    std::vector<IndexedRound>* rounds = nullptr;
    while ((rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      const char* id =
          reinterpret_cast<const char*>(sqlite3_column_text(s.get(), 0));
      const int id_size = sqlite3_column_bytes(s.get(), 0);
      if (rounds == nullptr || absl::string_view(id, id_size) != run_id) {
        run_id.assign(id, id_size);
        rounds = &index.rounds[run_id];
      }
      rounds->push_back(IndexedRound{
          static_cast<uint64_t>(sqlite3_column_int64(s.get(), 1)),
          static_cast<uint64_t>(sqlite3_column_int64(s.get(), 2)),
          ColumnReal(s.get(), 3),
          static_cast<v1::Action>(sqlite3_column_int(s.get(), 4)),
          static_cast<v1::Reason>(sqlite3_column_int(s.get(), 5)),
          sqlite3_column_double(s.get(), 6), sqlite3_column_double(s.get(), 7),
          sqlite3_column_int64(s.get(), 8)});
    }
    if (rc != SQLITE_DONE) return SqliteError(rc, db_, "SELECT FROM rounds");
  }
  for (auto& [id, rounds] : index.rounds) {
    std::sort(rounds.begin(), rounds.end(),
              [](const IndexedRound& a, const IndexedRound& b) {
                return a.sequence < b.sequence;
              });
  }
  ASSIGN_OR_RETURN(index.abandoned, LoadAbandonedLocked());
  return index;
}

absl::StatusOr<std::vector<RoundRecord>> SqliteTelemetryStore::ReadRounds(
    const std::string& run_id, uint64_t from_step, uint64_t to_step,
    size_t limit, bool with_participants) {
  std::vector<RoundRecord> rounds;
  if (from_step > to_step) return rounds;
  absl::MutexLock lock(&db_mu_);
  ASSIGN_OR_RETURN(
      Statement s,
      PrepareStatement(db_, absl::StrCat("SELECT ",
                                         with_participants
                                             ? kRoundColumns
                                             : kRoundColumnsWithoutParticipants,
                                         " FROM rounds WHERE run_id = ?1 AND "
                                         "step BETWEEN ?2 AND ?3 ORDER BY step")
                                .c_str()));
  for (const auto& [from, to] : SignedStepRanges(from_step, to_step)) {
    sqlite3_bind_text(s.get(), 1, run_id.data(), run_id.size(), SQLITE_STATIC);
    sqlite3_bind_int64(s.get(), 2, from);
    sqlite3_bind_int64(s.get(), 3, to);
    int rc = SQLITE_DONE;
    while ((limit == 0 || rounds.size() < limit) &&
           (rc = sqlite3_step(s.get())) == SQLITE_ROW) {
      absl::StatusOr<RoundRecord> record = RoundFromRow(s.get());
      if (!record.ok()) {
        sqlite3_reset(s.get());
        return record.status();
      }
      rounds.push_back(*std::move(record));
    }
    const bool full = limit != 0 && rounds.size() >= limit;
    sqlite3_reset(s.get());
    sqlite3_clear_bindings(s.get());
    if (!full && rc != SQLITE_DONE)
      return SqliteError(rc, db_, "SELECT FROM rounds");
    if (full) break;
  }
  return rounds;
}

absl::Status SqliteTelemetryStore::CheckIntegrity() {
  absl::MutexLock lock(&db_mu_);
  absl::StatusOr<Statement> s = PrepareStatement(db_, "PRAGMA integrity_check");
  if (!s.ok()) return s.status();
  std::vector<std::string> findings;
  int rc;
  while ((rc = sqlite3_step(s->get())) == SQLITE_ROW) {
    findings.push_back(ColumnText(s->get(), 0));
  }
  if (rc != SQLITE_DONE) return SqliteError(rc, db_, "PRAGMA integrity_check");
  if (findings.size() == 1 && findings[0] == "ok") return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("PRAGMA integrity_check of ",
                                          options_.path, ": ",
                                          absl::StrJoin(findings, "; ")));
}

}  // namespace server
}  // namespace gradnorm
