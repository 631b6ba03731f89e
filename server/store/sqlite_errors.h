// SQLite result codes as absl::Status, translated once, here. The message
// names the failing call, SQLite's description of the code and the
// connection's last error message.
//
//   int rc = sqlite3_step(statement);
//   if (rc != SQLITE_DONE) return SqliteError(rc, db, "INSERT INTO rounds");
//
// Codes: BUSY, LOCKED, IOERR -> UNAVAILABLE; FULL, NOMEM -> RESOURCE_EXHAUSTED;
// CONSTRAINT (primary key or unique) -> ALREADY_EXISTS, other constraints ->
// FAILED_PRECONDITION; CORRUPT, NOTADB -> DATA_LOSS; READONLY, PERM, AUTH ->
// PERMISSION_DENIED; CANTOPEN -> FAILED_PRECONDITION; INTERRUPT -> CANCELLED;
// TOOBIG -> INVALID_ARGUMENT; anything else -> INTERNAL.
//
// Thread-safety: as sqlite3_errmsg on `db` (call it where `db` is not in use
// by another thread).
#ifndef GRADNORM_SERVER_STORE_SQLITE_ERRORS_H_
#define GRADNORM_SERVER_STORE_SQLITE_ERRORS_H_

#include <sqlite3.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace gradnorm {
namespace server {

// The status for result code `rc` (extended codes are understood) of `call`
// on connection `db` (may be null). Never OK: pass only failure codes.
absl::Status SqliteError(int rc, sqlite3* db, absl::string_view call);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_SQLITE_ERRORS_H_
