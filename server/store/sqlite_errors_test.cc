#include "server/store/sqlite_errors.h"

#include "gtest/gtest.h"

namespace gradnorm {
namespace server {
namespace {

TEST(SqliteErrorTest, MapsCodes) {
  EXPECT_EQ(SqliteError(SQLITE_BUSY, nullptr, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteError(SQLITE_IOERR_FSYNC, nullptr, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(SqliteError(SQLITE_FULL, nullptr, "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(SqliteError(SQLITE_CONSTRAINT_PRIMARYKEY, nullptr, "x").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(SqliteError(SQLITE_CONSTRAINT_FOREIGNKEY, nullptr, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SqliteError(SQLITE_CORRUPT, nullptr, "x").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(SqliteError(SQLITE_NOTADB, nullptr, "x").code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(SqliteError(SQLITE_READONLY, nullptr, "x").code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(SqliteError(SQLITE_CANTOPEN, nullptr, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(SqliteError(SQLITE_MISUSE, nullptr, "x").code(),
            absl::StatusCode::kInternal);
}

TEST(SqliteErrorTest, MessageNamesTheCallAndTheConnectionsError) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(":memory:", &db), SQLITE_OK);
  int rc = sqlite3_exec(db, "SELECT * FROM missing", nullptr, nullptr, nullptr);
  absl::Status status = SqliteError(rc, db, "SELECT * FROM missing");
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(),
            "SELECT * FROM missing failed: SQL logic error (SQLite code 1): "
            "no such table: missing");
  sqlite3_close(db);
}

}  // namespace
}  // namespace server
}  // namespace gradnorm
