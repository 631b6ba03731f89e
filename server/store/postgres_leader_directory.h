// The leader directory (leader_directory.h) on PostgreSQL: the holder of the
// database is the session holding the coordinators' advisory lock
// (pg_locks), and where it serves is that session's application_name, which
// the holder sets (PostgresTelemetryStore::Advertise). A new holder NOTIFYs
// gradnorm_leader; the directory LISTENs on a connection of its own and asks
// again when notified, when told an address failed (Forget), and, while a
// Lookup waits, every `recheck` in case a notification was missed. An
// address just forgotten is not answered again for up to a second (a dead
// holder's session may be listed a moment longer), while the directory asks
// every 50 ms, unless a holder notifies meanwhile (it may be back on the same
// address); a Lookup made meanwhile waits, also while the read that follows
// the Forget is still under way. When the
// lock's session ends (its coordinator died), PostgreSQL drops the lock, so
// a dead holder is never answered for long.
//
//   PostgresLeaderDirectoryOptions options;
//   options.dsn = dsn;
//   auto directory = std::make_unique<PostgresLeaderDirectory>(options);
//   directory->Lookup(deadline, done);
//
// An unreachable database is retried every `recheck`; meanwhile Known() is
// false and lookups wait (and end UNAVAILABLE at their deadlines).
//
// Thread-safety: as LeaderDirectory; one thread of its own.
#ifndef GRADNORM_SERVER_STORE_POSTGRES_LEADER_DIRECTORY_H_
#define GRADNORM_SERVER_STORE_POSTGRES_LEADER_DIRECTORY_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/store/leader_directory.h"
#include "server/store/postgres_connection.h"

namespace gradnorm {
namespace server {

struct PostgresLeaderDirectoryOptions {
  std::string dsn;
  absl::Duration recheck = absl::Seconds(1);
  // Called on the directory's thread when Known() changes; may be empty.
  std::function<void(bool known)> on_known;
  // For tests: called on the directory's thread just before each read of the
  // holder; may be empty.
  std::function<void()> before_read;
};

class PostgresLeaderDirectory final : public LeaderDirectory {
 public:
  explicit PostgresLeaderDirectory(PostgresLeaderDirectoryOptions options);
  // Stops the thread; waiting lookups get UNAVAILABLE.
  ~PostgresLeaderDirectory() override;
  PostgresLeaderDirectory(const PostgresLeaderDirectory&) = delete;
  PostgresLeaderDirectory& operator=(const PostgresLeaderDirectory&) = delete;

  void Lookup(absl::Time deadline, LookupCallback done) override;
  void Forget(const std::string& address) override;
  bool Known() override;

  // Times the holder was read from the database (for tests).
  int queries();

  // The host:port of the coordinator holding the database, "" when none
  // holds it or the holder advertised nothing.
  static absl::StatusOr<std::string> ReadHolder(PgConnection& db);

 private:
  void Loop();
  // Sets the known address; answers the waiters when there is one.
  void SetAddress(const std::string& address);
  // Answers UNAVAILABLE to waiters past their deadline (all when stopping).
  void ExpireWaiters(absl::Time now, bool all);
  void Wake();
  // Whether `address` is the one just forgotten, not answered until
  // forgotten_until_.
  bool HeldBack(const std::string& address, absl::Time now) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads the notifications libpq holds; when there were any, asks again and
  // holds nothing back. Whether there were.
  bool TakeNotifications(PgConnection& db);

  const PostgresLeaderDirectoryOptions options_;
  int wake_read_ = -1;
  int wake_write_ = -1;
  absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
  // Ask the database again before answering.
  bool stale_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int queries_ ABSL_GUARDED_BY(mu_) = 0;
  LookupWaiters waiters_ ABSL_GUARDED_BY(mu_);
  // The address last forgotten: the database may still list its session
  // for a moment; until forgotten_until_ it is not answered.
  std::string forgotten_ ABSL_GUARDED_BY(mu_);
  absl::Time forgotten_until_ ABSL_GUARDED_BY(mu_);
  static constexpr absl::Duration kForgetFor = absl::Seconds(1);
  static constexpr absl::Duration kForgottenRecheck = absl::Milliseconds(50);
  std::thread thread_;
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_POSTGRES_LEADER_DIRECTORY_H_
