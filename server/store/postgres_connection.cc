#include "server/store/postgres_connection.h"

#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace gradnorm {
namespace server {
namespace {

// Built-in type OIDs (catalog/pg_type_d.h).
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt4Oid = 23;
constexpr Oid kTextOid = 25;
constexpr Oid kFloat8Oid = 701;

std::string BigEndian64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

uint64_t ReadBigEndian(const char* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// The first line of libpq's message, without the trailing newline.
std::string Message(const char* text) {
  std::string s = text != nullptr ? text : "";
  return std::string(absl::StripTrailingAsciiWhitespace(s));
}

}  // namespace

PgParam PgParam::Text(absl::string_view s) {
  return PgParam{kTextOid, std::string(s)};
}
PgParam PgParam::Bytes(absl::string_view b) {
  return PgParam{kByteaOid, std::string(b)};
}
PgParam PgParam::Int64(int64_t v) {
  return PgParam{kInt8Oid, BigEndian64(static_cast<uint64_t>(v))};
}
PgParam PgParam::Int32(int32_t v) {
  return PgParam{kInt4Oid, BigEndian64(static_cast<uint32_t>(v)).substr(4)};
}
PgParam PgParam::Float64(double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return PgParam{kFloat8Oid, BigEndian64(bits)};
}
PgParam PgParam::Bool(bool v) {
  return PgParam{kBoolOid, std::string(1, v ? '\1' : '\0')};
}

int64_t PgResult::affected() const {
  const char* n = PQcmdTuples(result_.get());
  int64_t v = 0;
  for (; n != nullptr && *n >= '0' && *n <= '9'; ++n) v = v * 10 + (*n - '0');
  return v;
}

int64_t PgResult::Int64(int row, int col) const {
  return static_cast<int64_t>(
      ReadBigEndian(PQgetvalue(result_.get(), row, col), 8));
}

int32_t PgResult::Int32(int row, int col) const {
  return static_cast<int32_t>(
      ReadBigEndian(PQgetvalue(result_.get(), row, col), 4));
}

double PgResult::Float64(int row, int col) const {
  const uint64_t bits = ReadBigEndian(PQgetvalue(result_.get(), row, col), 8);
  double v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

bool PgResult::Bool(int row, int col) const {
  return PQgetvalue(result_.get(), row, col)[0] != 0;
}

std::string PgResult::Bytes(int row, int col) const {
  return std::string(PQgetvalue(result_.get(), row, col),
                     PQgetlength(result_.get(), row, col));
}

absl::StatusCode CodeForSqlState(absl::string_view s) {
  if (s == "23505") return absl::StatusCode::kAlreadyExists;
  if (s == "40001" || s == "40P01") return absl::StatusCode::kAborted;
  if (absl::StartsWith(s, "08") || s == "57P01" || s == "57P02" ||
      s == "57P03" || s == "53300") {
    return absl::StatusCode::kUnavailable;
  }
  if (absl::StartsWith(s, "53")) return absl::StatusCode::kResourceExhausted;
  if (absl::StartsWith(s, "XX001") || absl::StartsWith(s, "XX002")) {
    return absl::StatusCode::kDataLoss;
  }
  if (s == "42501" || absl::StartsWith(s, "28")) {
    return absl::StatusCode::kPermissionDenied;
  }
  return absl::StatusCode::kInternal;
}

absl::StatusOr<std::unique_ptr<PgConnection>> PgConnection::Connect(
    const std::string& dsn) {
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(dsn.c_str(), &error);
  if (parsed == nullptr) {
    const std::string message = Message(error);
    PQfreemem(error);
    return absl::InvalidArgumentError(absl::StrCat(
        "the PostgreSQL connection string does not parse: ", message,
        "; expected \"host=... port=... dbname=... user=...\" or a "
        "postgresql:// URI"));
  }
  PQconninfoFree(parsed);
  // Defaults the connection string may override: a connection attempt and
  // a silent peer (a database host gone without closing its sockets) fail
  // within seconds instead of blocking for minutes.
  const char* keywords[] = {"connect_timeout",
                            "tcp_user_timeout",
                            "keepalives_idle",
                            "keepalives_interval",
                            "keepalives_count",
                            "dbname",
                            nullptr};
  const char* values[] = {"10", "15000", "10", "5", "2", dsn.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (PQstatus(conn) != CONNECTION_OK) {
    const std::string message = Message(PQerrorMessage(conn));
    PQfinish(conn);
    const bool refused = absl::StrContains(message, "authentication") ||
                         absl::StrContains(message, "password");
    return absl::Status(
        refused ? absl::StatusCode::kPermissionDenied
                : absl::StatusCode::kUnavailable,
        absl::StrCat("cannot connect to PostgreSQL: ", message));
  }
  return std::unique_ptr<PgConnection>(new PgConnection(conn));
}

PgConnection::~PgConnection() { PQfinish(conn_); }

absl::Status PgConnection::EnsureConnected() {
  if (PQstatus(conn_) == CONNECTION_OK) return absl::OkStatus();
  PQreset(conn_);
  if (PQstatus(conn_) == CONNECTION_OK) {
    ++connects_;
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("PostgreSQL connection lost: ",
                                             Message(PQerrorMessage(conn_))));
}

absl::Status PgConnection::ErrorOf(PGresult* result, absl::string_view sql) {
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  std::string message = Message(PQresultErrorMessage(result));
  if (message.empty()) message = Message(PQerrorMessage(conn_));
  // No SQLSTATE: the connection failed under the statement.
  const absl::StatusCode code = state != nullptr
                                    ? CodeForSqlState(state)
                                    : absl::StatusCode::kUnavailable;
  return absl::Status(
      code, absl::StrCat(absl::string_view(sql).substr(0, 40), ": ", message));
}

absl::StatusOr<PgResult> PgConnection::Exec(
    const std::string& sql, const std::vector<PgParam>& params) {
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  std::vector<Oid> types(params.size());
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size());
  std::vector<int> formats(params.size(), 1);
  for (size_t i = 0; i < params.size(); ++i) {
    types[i] = params[i].type;
    values[i] = params[i].null ? nullptr : params[i].bytes.data();
    lengths[i] = static_cast<int>(params[i].bytes.size());
  }
  PGresult* result = PQexecParams(
      conn_, sql.c_str(), static_cast<int>(params.size()), types.data(),
      values.data(), lengths.data(), formats.data(), /*resultFormat=*/1);
  const ExecStatusType status = PQresultStatus(result);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    absl::Status error = ErrorOf(result, sql);
    PQclear(result);
    return error;
  }
  return PgResult(result);
}

absl::StatusOr<std::vector<std::vector<std::optional<std::string>>>>
PgConnection::QueryText(const std::string& sql) {
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  PGresult* result = PQexec(conn_, sql.c_str());
  if (PQresultStatus(result) != PGRES_TUPLES_OK) {
    absl::Status error = ErrorOf(result, sql);
    PQclear(result);
    return error;
  }
  std::vector<std::vector<std::optional<std::string>>> rows(PQntuples(result));
  for (int r = 0; r < PQntuples(result); ++r) {
    for (int c = 0; c < PQnfields(result); ++c) {
      if (PQgetisnull(result, r, c)) {
        rows[r].push_back(std::nullopt);
      } else {
        rows[r].push_back(
            std::string(PQgetvalue(result, r, c), PQgetlength(result, r, c)));
      }
    }
  }
  PQclear(result);
  return rows;
}

absl::Status PgConnection::ExecScript(const std::string& sql) {
  if (absl::Status s = EnsureConnected(); !s.ok()) return s;
  PGresult* result = PQexec(conn_, sql.c_str());
  const ExecStatusType status = PQresultStatus(result);
  absl::Status out = absl::OkStatus();
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
    out = ErrorOf(result, sql);
  }
  PQclear(result);
  return out;
}

}  // namespace server
}  // namespace gradnorm
