#include "server/store/local_postgres.h"

#include <postgresql/libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "server/store/postgres_connection.h"

namespace gradnorm {
namespace server {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr char kUser[] = "gradnorm";

// The newest /usr/lib/postgresql/N/bin with initdb in it.
std::string FindBin() {
  if (const char* bin = std::getenv("GRADNORM_POSTGRES_BIN")) return bin;
  std::string best;
  int best_version = -1;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator("/usr/lib/postgresql", error)) {
    const std::string bin = entry.path().string() + "/bin";
    const int version = std::atoi(entry.path().filename().c_str());
    if (access((bin + "/initdb").c_str(), X_OK) == 0 &&
        version > best_version) {
      best = bin;
      best_version = version;
    }
  }
  return best;
}

}  // namespace

std::vector<std::string> LocalPostgres::AsServerUser(
    std::vector<std::string> argv) const {
  if (!drop_privileges_) return argv;
  std::vector<std::string> out = {
      "/usr/bin/setpriv", absl::StrCat("--reuid=", kNobody),
      absl::StrCat("--regid=", kNogroup), "--clear-groups", "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

absl::StatusOr<std::unique_ptr<LocalPostgres>> LocalPostgres::Start() {
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->bin_ = FindBin();
  if (pg->bin_.empty()) {
    return absl::FailedPreconditionError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/N/bin/initdb); "
        "expected Debian's postgresql package (./scripts/setup installs it) "
        "or $GRADNORM_POSTGRES_BIN");
  }
  // Under /tmp, not the test's own temporary directory: the unprivileged
  // server user must be able to reach it.
  char pattern[] = "/tmp/gradnorm-pg-XXXXXX";
  if (mkdtemp(pattern) == nullptr) {
    return absl::InternalError("mkdtemp under /tmp failed");
  }
  pg->dir_ = pattern;
  pg->drop_privileges_ = geteuid() == 0;
  if (pg->drop_privileges_) {
    if (access("/usr/bin/setpriv", X_OK) != 0) {
      return absl::FailedPreconditionError(
          "running as root, PostgreSQL must run as nobody through "
          "/usr/bin/setpriv, which is missing (Debian's util-linux)");
    }
    if (chown(pg->dir_.c_str(), kNobody, kNogroup) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "running as root, PostgreSQL must run as nobody: cannot hand ",
          pg->dir_, " to it: ", std::strerror(errno)));
    }
  }
  ChildOptions options;
  options.output_path = pg->dir_ + "/initdb.log";
  ASSIGN_OR_RETURN(
      CommandOutput init,
      RunCommand(
          pg->AsServerUser({pg->bin_ + "/initdb", "-D", pg->dir_ + "/data",
                            "-U", kUser, "--auth=trust", "-E", "UTF8",
                            "--no-sync", "--no-instructions"}),
          options, absl::Now() + absl::Seconds(120)));
  if (init.exit_code != 0) {
    return absl::InternalError(
        absl::StrCat("initdb failed (exit ", init.exit_code, "):\n",
                     LastLinesOf(options.output_path, 20)));
  }
  RETURN_IF_ERROR(pg->StartPostmaster());
  return pg;
}

LocalPostgres::~LocalPostgres() {
  Stop().IgnoreError();
  std::error_code error;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, error);
}

std::string LocalPostgres::Dsn(const std::string& name) const {
  return absl::StrCat("host=", dir_, " port=5432 user=", kUser,
                      " dbname=", name, " connect_timeout=5");
}

absl::Status LocalPostgres::StartPostmaster() {
  ChildOptions options;
  options.output_path = dir_ + "/postgres.log";
  ASSIGN_OR_RETURN(
      postmaster_,
      ChildProcess::Start(
          AsServerUser({bin_ + "/postgres", "-D", dir_ + "/data", "-k", dir_,
                        "-p", "5432", "-c", "listen_addresses=", "-c",
                        "fsync=off", "-c", "max_connections=200", "-c",
                        "shared_buffers=32MB"}),
          options));
  const std::string dsn = Dsn("postgres");
  for (absl::Time until = absl::Now() + absl::Seconds(60);;) {
    if (PQping(dsn.c_str()) == PQPING_OK) return absl::OkStatus();
    if (!postmaster_->Running() || absl::Now() > until) {
      return absl::InternalError(absl::StrCat(
          "PostgreSQL did not start:\n", LastLinesOf(options.output_path, 20)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

absl::StatusOr<std::string> LocalPostgres::CreateDatabase(
    const std::string& name) {
  ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> admin,
                   PgConnection::Connect(Dsn("postgres")));
  RETURN_IF_ERROR(
      admin->ExecScript(absl::StrCat("CREATE DATABASE \"", name, "\"")));
  return Dsn(name);
}

absl::Status LocalPostgres::Stop() {
  if (postmaster_ == nullptr) return absl::OkStatus();
  // Fast shutdown; the postmaster is a child of setpriv's exec, so the
  // same process.
  absl::StatusOr<int> code = postmaster_->StopAt(absl::Now(), SIGINT);
  postmaster_.reset();
  return code.ok() ||
                 code.status().code() == absl::StatusCode::kDeadlineExceeded
             ? absl::OkStatus()
             : code.status();
}

absl::Status LocalPostgres::Restart() {
  RETURN_IF_ERROR(Stop());
  return StartPostmaster();
}

}  // namespace server
}  // namespace gradnorm
