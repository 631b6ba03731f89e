// Small helpers over SQLite's C API: an owned prepared statement, NaN-aware
// REAL columns, and running a statement or a script with errors translated
// by sqlite_errors.h.
//
//   ASSIGN_OR_RETURN(Statement select, PrepareStatement(db, "SELECT ..."));
//   while (sqlite3_step(select.get()) == SQLITE_ROW) ColumnReal(select.get(),
//   0);
//
// Thread-safety: as the connection they are given.
#ifndef GRADNORM_SERVER_STORE_SQLITE_STATEMENT_H_
#define GRADNORM_SERVER_STORE_SQLITE_STATEMENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sqlite3.h"

namespace gradnorm {
namespace server {

struct StatementDeleter {
  void operator()(sqlite3_stmt* statement) const {
    sqlite3_finalize(statement);
  }
};
using Statement = std::unique_ptr<sqlite3_stmt, StatementDeleter>;

absl::StatusOr<Statement> PrepareStatement(sqlite3* db, const char* sql);

// Binds `value`, NaN as NULL (SQLite does so on its own; this documents it).
void BindReal(sqlite3_stmt* s, int index, double value);
// The REAL column `index`, NULL as NaN.
double ColumnReal(sqlite3_stmt* s, int index);
std::string ColumnText(sqlite3_stmt* s, int index);

// Runs `statement` to completion and resets it for the next use; errors name
// `call`.
absl::Status StepDone(sqlite3* db, sqlite3_stmt* statement,
                      absl::string_view call);

// Runs the SQL script `sql`.
absl::Status ExecSql(sqlite3* db, const char* sql);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_SQLITE_STATEMENT_H_
