#include "server/store/sqlite_statement.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/store/sqlite_errors.h"

namespace gradnorm {
namespace server {

absl::StatusOr<Statement> PrepareStatement(sqlite3* db, const char* sql) {
  sqlite3_stmt* statement = nullptr;
  int rc = sqlite3_prepare_v2(db, sql, -1, &statement, nullptr);
  if (rc != SQLITE_OK)
    return SqliteError(rc, db, absl::StrCat("prepare ", sql));
  return Statement(statement);
}

void BindReal(sqlite3_stmt* s, int index, double value) {
  if (std::isnan(value)) {
    sqlite3_bind_null(s, index);
  } else {
    sqlite3_bind_double(s, index, value);
  }
}

double ColumnReal(sqlite3_stmt* s, int index) {
  if (sqlite3_column_type(s, index) == SQLITE_NULL) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return sqlite3_column_double(s, index);
}

std::string ColumnText(sqlite3_stmt* s, int index) {
  const unsigned char* text = sqlite3_column_text(s, index);
  return text == nullptr ? std::string()
                         : std::string(reinterpret_cast<const char*>(text),
                                       sqlite3_column_bytes(s, index));
}

absl::Status StepDone(sqlite3* db, sqlite3_stmt* statement,
                      absl::string_view call) {
  int rc = sqlite3_step(statement);
  absl::Status status =
      rc == SQLITE_DONE ? absl::OkStatus() : SqliteError(rc, db, call);
  sqlite3_reset(statement);
  sqlite3_clear_bindings(statement);
  return status;
}

absl::Status ExecSql(sqlite3* db, const char* sql) {
  char* error = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  sqlite3_free(error);
  if (rc != SQLITE_OK) return SqliteError(rc, db, sql);
  return absl::OkStatus();
}

}  // namespace server
}  // namespace gradnorm
