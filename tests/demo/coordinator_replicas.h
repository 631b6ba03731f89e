// Several coordinator processes on one PostgreSQL database, for the demo and
// the tests (//tests:coordinator_postgres_test, coordinator_replicas_test),
// in one of two roles:
//   - kStandbys: each runs with --postgres_standby, so the one holding the
//     database serves and the others wait to take over;
//   - kReplicas: each runs with --replica and serves clients, forwarding
//     their calls to the one holding the database (on its peer port).
// Clients list every address in one gRPC target (target(), or target(i) to
// prefer replica i). KillAndRestart() SIGKILLs one and starts it again at
// once.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<CoordinatorReplicas> replicas,
//                    CoordinatorReplicas::Start(binary, dir, dsn, 3, flags));
//   client_options.target = replicas->target();  // "ipv4:127.0.0.1:p1,..."
//   ASSIGN_OR_RETURN(bool was_serving, replicas->KillAndRestart(1));
//   ...
//   RETURN_IF_ERROR(replicas->StopAll());  // SIGTERM, every exit 0
//
// Thread-safety: KillAndRestart, Serving and ServingHttpPort may be called
// from one thread while another uses target(); nothing else concurrently.
#ifndef GRADNORM_TESTS_DEMO_COORDINATOR_REPLICAS_H_
#define GRADNORM_TESTS_DEMO_COORDINATOR_REPLICAS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/child_process.h"

namespace gradnorm {
namespace demo {

class CoordinatorReplicas {
 public:
  enum class Role { kStandbys, kReplicas };

  // Starts `count` coordinators (binary, --store=postgres with `dsn`,
  // --postgres_standby, each on a loopback port of its own, logs and port
  // files in `dir`, plus `extra_flags`) and waits (20 s at most) until one
  // serves. UNAVAILABLE, with the logs' tails, when none does.
  static absl::StatusOr<std::unique_ptr<CoordinatorReplicas>> Start(
      const std::string& binary, const std::string& dir, const std::string& dsn,
      int count, const std::vector<std::string>& extra_flags,
      Role role = Role::kStandbys);
  ~CoordinatorReplicas();

  // One gRPC target naming every coordinator: "ipv4:127.0.0.1:P1,...".
  const std::string& target() const { return target_; }
  // The same addresses, coordinator `first` first (pick_first tries them in
  // order): a client that prefers that replica and fails over to the next.
  std::string target(int first) const;
  int count() const { return static_cast<int>(replicas_.size()); }

  // SIGKILLs coordinator `i` and starts it again; whether it was the one
  // serving.
  absl::StatusOr<bool> KillAndRestart(int i);
  // The coordinator serving now (kReplicas: the one holding the database;
  // -1: none at this moment).
  int Serving();
  // The HTTP port of the coordinator serving now (kReplicas: replica 0's,
  // which relays to the holder's; 0: none).
  int ServingHttpPort();
  // Coordinator i's health-only port (--health_listen, open for its whole
  // life: NOT_SERVING while it stands by or waits for its database).
  int health_port(int i) {
    absl::MutexLock lock(&mu_);
    return replicas_[i].health_port;
  }
  // Coordinator i's HTTP port as it wrote it (kReplicas: its relay to the
  // holder's; 0: none yet).
  int http_port(int i);
  // SIGTERM to each; INTERNAL naming any that did not exit 0 within 20 s.
  absl::Status StopAll();

 private:
  struct Replica {
    int port = 0;
    int peer_port = 0;  // kReplicas: where it serves while holding
    int health_port = 0;
    std::string port_file;
    std::string http_port_file;
    std::unique_ptr<ChildProcess> process;
    int starts = 0;
  };
  CoordinatorReplicas() = default;
  absl::Status StartOne(int i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The coordinator serving (kStandbys) or holding the database
  // (kReplicas: asked of the database); -1: none.
  int ServingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  std::string binary_;
  std::string dir_;
  std::string dsn_;
  std::vector<std::string> extra_flags_;
  Role role_ = Role::kStandbys;
  std::string target_;
  std::vector<int> ports_;
  absl::Mutex mu_;
  std::vector<Replica> replicas_ ABSL_GUARDED_BY(mu_);
};

}  // namespace demo
}  // namespace gradnorm

#endif  // GRADNORM_TESTS_DEMO_COORDINATOR_REPLICAS_H_
