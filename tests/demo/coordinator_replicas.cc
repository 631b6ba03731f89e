#include "tests/demo/coordinator_replicas.h"

#include <signal.h>

#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/store/leader_directory.h"
#include "server/store/postgres_connection.h"
#include "server/store/postgres_leader_directory.h"
#include "tests/local_coordinator.h"

namespace gradnorm {
namespace demo {
namespace {

// The port a coordinator wrote once serving; 0 when it has not.
int PortIn(const std::string& file) {
  int port = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadWholeFile(file)),
                        &port)) {
    return 0;
  }
  return port;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorReplicas>> CoordinatorReplicas::Start(
    const std::string& binary, const std::string& dir, const std::string& dsn,
    int count, const std::vector<std::string>& extra_flags, Role role) {
  if (count < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("replicas ", count, ": expected at least 1"));
  }
  std::unique_ptr<CoordinatorReplicas> r(new CoordinatorReplicas());
  r->binary_ = binary;
  r->dir_ = dir;
  r->dsn_ = dsn;
  r->extra_flags_ = extra_flags;
  r->role_ = role;
  r->target_ = "ipv4:";
  absl::MutexLock lock(&r->mu_);
  r->replicas_.resize(count);
  for (int i = 0; i < count; ++i) {
    Replica& replica = r->replicas_[i];
    replica.port = FreeLoopbackPort();
    replica.health_port = FreeLoopbackPort();
    replica.peer_port = FreeLoopbackPort();
    replica.port_file = absl::StrCat(dir, "/coordinator", i, ".port");
    replica.http_port_file = absl::StrCat(dir, "/coordinator", i, ".http.port");
    absl::StrAppend(&r->target_, i == 0 ? "" : ",", "127.0.0.1:", replica.port);
    r->ports_.push_back(replica.port);
    if (absl::Status s = r->StartOne(i); !s.ok()) return s;
  }
  for (const absl::Time until = absl::Now() + absl::Seconds(20);
       absl::Now() < until; absl::SleepFor(absl::Milliseconds(20))) {
    // kReplicas: every replica writes its port at once; wait for the one
    // holding the database too.
    if (r->ServingLocked() >= 0) return r;
  }
  std::string logs;
  for (int i = 0; i < count; ++i) {
    absl::StrAppend(&logs, "\ncoordinator ", i, ":\n",
                    LastLinesOf(r->replicas_[i].process->output_path(), 5));
  }
  return absl::UnavailableError(
      absl::StrCat("no coordinator served within 20 s:", logs));
}

CoordinatorReplicas::~CoordinatorReplicas() {
  absl::MutexLock lock(&mu_);
  for (Replica& replica : replicas_) {
    if (replica.process != nullptr && replica.process->Running()) {
      replica.process->Kill();
    }
  }
}

absl::Status CoordinatorReplicas::StartOne(int i) {
  Replica& replica = replicas_[i];
  std::remove(replica.port_file.c_str());
  std::remove(replica.http_port_file.c_str());
  std::vector<std::string> argv = {
      binary_,
      "--store=postgres",
      "--postgres_dsn=" + dsn_,
      absl::StrCat("--listen=127.0.0.1:", replica.port),
      absl::StrCat("--health_listen=127.0.0.1:", replica.health_port),
      "--port_file=" + replica.port_file,
      "--http_port_file=" + replica.http_port_file};
  if (role_ == Role::kStandbys) {
    argv.push_back("--postgres_standby");
  } else {
    // Serving() finds the one holding the database by its peer port.
    argv.push_back("--replica");
    argv.push_back(absl::StrCat("--peer_listen=127.0.0.1:", replica.peer_port));
    argv.push_back("--http_listen=127.0.0.1:0");
  }
  argv.insert(argv.end(), extra_flags_.begin(), extra_flags_.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start(
      argv,
      absl::StrCat(dir_, "/coordinator", i, ".", replica.starts++, ".log"));
  if (!process.ok()) return process.status();
  replica.process = *std::move(process);
  return absl::OkStatus();
}

absl::StatusOr<bool> CoordinatorReplicas::KillAndRestart(int i) {
  absl::MutexLock lock(&mu_);
  if (i < 0 || i >= static_cast<int>(replicas_.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("coordinator ", i, " of ", replicas_.size()));
  }
  Replica& replica = replicas_[i];
  const bool serving = ServingLocked() == i;
  replica.process->Kill();
  if (absl::Status s = StartOne(i); !s.ok()) return s;
  return serving;
}

int CoordinatorReplicas::Serving() {
  absl::MutexLock lock(&mu_);
  return ServingLocked();
}

int CoordinatorReplicas::ServingLocked() {
  if (role_ == Role::kStandbys) {
    for (size_t i = 0; i < replicas_.size(); ++i) {
      if (PortIn(replicas_[i].port_file) != 0) return static_cast<int>(i);
    }
    return -1;
  }
  absl::StatusOr<std::unique_ptr<server::PgConnection>> db =
      server::PgConnection::Connect(dsn_);
  if (!db.ok()) return -1;
  absl::StatusOr<std::string> holder =
      server::PostgresLeaderDirectory::ReadHolder(**db);
  if (!holder.ok() || holder->empty()) return -1;
  const std::string grpc = server::ParseAdvertised(*holder).grpc;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    if (grpc == absl::StrCat("127.0.0.1:", replicas_[i].peer_port)) {
      return static_cast<int>(i);
    }
  }
  return -1;
}

int CoordinatorReplicas::ServingHttpPort() {
  if (role_ == Role::kReplicas) {
    absl::MutexLock lock(&mu_);
    return PortIn(replicas_[0].http_port_file);
  }
  const int serving = Serving();
  if (serving < 0) return 0;
  absl::MutexLock lock(&mu_);
  return PortIn(replicas_[serving].http_port_file);
}

std::string CoordinatorReplicas::target(int first) const {
  std::string target = "ipv4:";
  const int n = static_cast<int>(ports_.size());
  for (int k = 0; k < n; ++k) {
    absl::StrAppend(&target, k == 0 ? "" : ",",
                    "127.0.0.1:", ports_[((first + k) % n + n) % n]);
  }
  return target;
}

int CoordinatorReplicas::http_port(int i) {
  absl::MutexLock lock(&mu_);
  return PortIn(replicas_[i].http_port_file);
}

absl::Status CoordinatorReplicas::StopAll() {
  absl::MutexLock lock(&mu_);
  for (Replica& replica : replicas_) replica.process->Signal(SIGTERM);
  std::string problems;
  for (size_t i = 0; i < replicas_.size(); ++i) {
    absl::StatusOr<int> code =
        replicas_[i].process->Wait(absl::Now() + absl::Seconds(20));
    if (!code.ok() || *code != 0) {
      absl::StrAppend(
          &problems, "\ncoordinator ", i, " ",
          code.ok() ? absl::StrCat("exited ", *code) : code.status().ToString(),
          ":\n", LastLinesOf(replicas_[i].process->output_path(), 5));
    }
  }
  if (!problems.empty()) {
    return absl::InternalError(absl::StrCat("after SIGTERM:", problems));
  }
  return absl::OkStatus();
}

}  // namespace demo
}  // namespace gradnorm
