// One libpq connection with binary parameters and results, and PostgreSQL's
// errors as absl::Status values (by SQLSTATE). The PostgreSQL store's only
// contact with libpq.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> db,
//                    PgConnection::Connect("host=/run/pg port=5432 dbname=x"));
//   ASSIGN_OR_RETURN(PgResult r,
//                    db->Exec("SELECT step FROM rounds WHERE run_id = $1",
//                             {PgParam::Text("r7")}));
//   int64_t step = r.Int64(0, 0);
//
// A connection found broken is reset once before a statement; when that
// fails too the statement is UNAVAILABLE.
//
// Thread-safety: a PgConnection is not thread-safe (libpq's rule): one user
// at a time. PgResult is a value.
#ifndef GRADNORM_SERVER_STORE_POSTGRES_CONNECTION_H_
#define GRADNORM_SERVER_STORE_POSTGRES_CONNECTION_H_

#include <postgresql/libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace gradnorm {
namespace server {

// A statement's parameter in binary form (network byte order).
struct PgParam {
  Oid type = 0;
  std::string bytes;
  bool null = false;

  static PgParam Text(absl::string_view s);
  static PgParam Bytes(absl::string_view b);
  static PgParam Int64(int64_t v);
  static PgParam Int32(int32_t v);
  static PgParam Float64(double v);
  static PgParam Bool(bool v);
};

// A statement's result, in binary form.
class PgResult {
 public:
  explicit PgResult(PGresult* result) : result_(result, &PQclear) {}
  int rows() const { return PQntuples(result_.get()); }
  // Rows an INSERT, UPDATE or DELETE touched.
  int64_t affected() const;
  bool IsNull(int row, int col) const {
    return PQgetisnull(result_.get(), row, col) != 0;
  }
  int64_t Int64(int row, int col) const;
  int32_t Int32(int row, int col) const;
  double Float64(int row, int col) const;
  bool Bool(int row, int col) const;
  // TEXT and BYTEA.
  std::string Bytes(int row, int col) const;

 private:
  std::shared_ptr<PGresult> result_;
};

// SQLSTATE -> status code: unique violation ALREADY_EXISTS, connection
// failures and shutdowns UNAVAILABLE, resources RESOURCE_EXHAUSTED,
// serialization failures and deadlocks ABORTED, data corruption DATA_LOSS,
// privileges PERMISSION_DENIED, the rest INTERNAL.
absl::StatusCode CodeForSqlState(absl::string_view sqlstate);

class PgConnection {
 public:
  // Connects with a libpq connection string ("host=... port=... dbname=...
  // user=...", or a postgresql:// URI). Unless the string says otherwise, a
  // connection attempt gives up after 10 s and a peer silent for 15 s ends
  // the connection (connect_timeout, tcp_user_timeout, keepalives). UNAVAILABLE
  // when the server cannot be reached; INVALID_ARGUMENT for a string libpq
  // cannot parse; the server's refusal (PERMISSION_DENIED for authentication)
  // otherwise.
  static absl::StatusOr<std::unique_ptr<PgConnection>> Connect(
      const std::string& dsn);
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement with binary parameters and results. `what` names it
  // in errors.
  absl::StatusOr<PgResult> Exec(const std::string& sql,
                                const std::vector<PgParam>& params = {});
  // Runs statements without parameters (schema, BEGIN, COMMIT, LISTEN...).
  absl::Status ExecScript(const std::string& sql);
  // Runs one query and returns its rows in PostgreSQL's text form (as psql
  // prints them; a float8 prints the shortest digits that read back exactly),
  // nullopt for NULL: for SQL written by people, such as dashboards'.
  absl::StatusOr<std::vector<std::vector<std::optional<std::string>>>>
  QueryText(const std::string& sql);

  // Resets a broken connection (as each statement does first); UNAVAILABLE
  // when it stays broken. For session state that must be set up again on a
  // new connection before the next statement (a lock, LISTEN).
  absl::Status EnsureConnected();

  // Connections made so far: 1 after Connect, one more for each reset.
  uint64_t connects() const { return connects_; }
  // The server's socket, to wait on for notifications.
  int socket() const { return PQsocket(conn_); }
  PGconn* raw() { return conn_; }

 private:
  explicit PgConnection(PGconn* conn) : conn_(conn) {}
  absl::Status ErrorOf(PGresult* result, absl::string_view sql);

  PGconn* conn_;
  uint64_t connects_ = 1;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_POSTGRES_CONNECTION_H_
