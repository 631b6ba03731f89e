// A real PostgreSQL server for tests and the demo, started from Debian's
// `postgresql` package: initdb in a fresh directory, the postmaster on a Unix
// socket in that directory (no TCP port to collide with), run as an
// unprivileged user (nobody) when the caller is root, since PostgreSQL refuses
// to run as root. Stopped and removed with the object.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<LocalPostgres> pg,
//   LocalPostgres::Start()); ASSIGN_OR_RETURN(std::string dsn,
//   pg->CreateDatabase("store_test"));
//   ... PostgresTelemetryStore::Open({.dsn = dsn}) ...
//   RETURN_IF_ERROR(pg->Stop());     // the database goes away...
//   RETURN_IF_ERROR(pg->Restart());  // ...and comes back with its data
//
// Thread-safety: one thread per object.
#ifndef GRADNORM_SERVER_STORE_LOCAL_POSTGRES_H_
#define GRADNORM_SERVER_STORE_LOCAL_POSTGRES_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/child_process.h"

namespace gradnorm {
namespace server {

class LocalPostgres {
 public:
  // FAILED_PRECONDITION when PostgreSQL's binaries are not installed
  // (/usr/lib/postgresql/N/bin, or $GRADNORM_POSTGRES_BIN), naming the
  // package; INTERNAL (with the server's log) when it does not start.
  static absl::StatusOr<std::unique_ptr<LocalPostgres>> Start();
  ~LocalPostgres();
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;

  // Creates database `name` and returns a libpq connection string for it.
  absl::StatusOr<std::string> CreateDatabase(const std::string& name);
  // The connection string of database `name`.
  std::string Dsn(const std::string& name) const;

  // The server's log, for a test's diagnostics.
  std::string log_path() const { return dir_ + "/postgres.log"; }

  // Fast shutdown (SIGINT): clients are disconnected, the data stays.
  absl::Status Stop();
  // Starts the postmaster again on the same data and socket.
  absl::Status Restart();

 private:
  LocalPostgres() = default;
  absl::Status StartPostmaster();
  // argv run as the unprivileged user when this process is root.
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;

  std::string bin_;
  std::string dir_;
  bool drop_privileges_ = false;
  std::unique_ptr<ChildProcess> postmaster_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_LOCAL_POSTGRES_H_
