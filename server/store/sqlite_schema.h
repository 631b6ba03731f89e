// The SQLite store's schema, and its migration from every older version.
//
//   RETURN_IF_ERROR(CreateOrMigrateSchema(db, path));  // inside a transaction
//
// Version history (PRAGMA user_version): 1 kept participants in a table of
// their own, one row each; 2 holds them in a BLOB per round; 3 added the
// abandoned steps; 4 when a run was finished; 5 whether a round's total was
// exact; 6 no column, but runs of older files are rewritten as inexact.
#ifndef GRADNORM_SERVER_STORE_SQLITE_SCHEMA_H_
#define GRADNORM_SERVER_STORE_SQLITE_SCHEMA_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/store/telemetry_store.h"
#include "sqlite3.h"

namespace gradnorm {
namespace server {

inline constexpr int kSqliteSchemaVersion = 6;

// Creates the schema in an empty database, or migrates an older one to
// kSqliteSchemaVersion; FAILED_PRECONDITION for a newer one (naming `path`).
// The caller holds a write transaction.
absl::Status CreateOrMigrateSchema(sqlite3* db, absl::string_view path);

// The rounds table's columns, in the order RoundFromRow reads them.
extern const char kRoundColumns[];
// The same columns with an empty BLOB for the participants (not read).
extern const char kRoundColumnsWithoutParticipants[];

// A row of kRoundColumns (or kRoundColumnsWithoutParticipants); DATA_LOSS
// when its participants do not decode.
absl::StatusOr<RoundRecord> RoundFromRow(sqlite3_stmt* q);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_SQLITE_SCHEMA_H_
