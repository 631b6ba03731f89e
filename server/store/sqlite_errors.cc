#include "server/store/sqlite_errors.h"

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace server {
namespace {

absl::StatusCode CodeFor(int rc) {
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
      return absl::StatusCode::kUnavailable;
    case SQLITE_FULL:
    case SQLITE_NOMEM:
      return absl::StatusCode::kResourceExhausted;
    case SQLITE_CONSTRAINT:
      return rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
                     rc == SQLITE_CONSTRAINT_UNIQUE
                 ? absl::StatusCode::kAlreadyExists
                 : absl::StatusCode::kFailedPrecondition;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::StatusCode::kDataLoss;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::StatusCode::kPermissionDenied;
    case SQLITE_CANTOPEN:
      return absl::StatusCode::kFailedPrecondition;
    case SQLITE_INTERRUPT:
      return absl::StatusCode::kCancelled;
    case SQLITE_TOOBIG:
      return absl::StatusCode::kInvalidArgument;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

absl::Status SqliteError(int rc, sqlite3* db, absl::string_view call) {
  std::string message = absl::StrCat(call, " failed: ", sqlite3_errstr(rc),
                                     " (SQLite code ", rc, ")");
  // errmsg describes the connection's latest failure, which is this one when
  // the caller translates right after the call.
  if (db != nullptr && sqlite3_errcode(db) != SQLITE_OK) {
    absl::StrAppend(&message, ": ", sqlite3_errmsg(db));
  }
  return absl::Status(CodeFor(rc), message);
}

}  // namespace server
}  // namespace gradnorm
