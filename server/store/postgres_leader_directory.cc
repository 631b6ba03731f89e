#include "server/store/postgres_leader_directory.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/store/postgres_telemetry_store.h"

namespace gradnorm {
namespace server {

PostgresLeaderDirectory::PostgresLeaderDirectory(
    PostgresLeaderDirectoryOptions options)
    : options_(std::move(options)) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0) {
    wake_read_ = fds[0];
    wake_write_ = fds[1];
  }
  thread_ = std::thread([this] { Loop(); });
}

PostgresLeaderDirectory::~PostgresLeaderDirectory() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  thread_.join();
  if (wake_read_ >= 0) close(wake_read_);
  if (wake_write_ >= 0) close(wake_write_);
}

absl::StatusOr<std::string> PostgresLeaderDirectory::ReadHolder(
    PgConnection& db) {
  // Advisory locks on a bigint key show as classid (high half), objid (low
  // half) and objsubid 1, in the database they were taken in.
  ASSIGN_OR_RETURN(PgResult r,
                   db.Exec("SELECT a.application_name FROM pg_locks l "
                           "JOIN pg_stat_activity a ON a.pid = l.pid "
                           "WHERE l.locktype = 'advisory' AND l.granted "
                           "AND l.objsubid = 1 "
                           "AND ((l.classid::int8 << 32) | l.objid::int8) = $1 "
                           "AND l.database = (SELECT oid FROM pg_database "
                           "WHERE datname = current_database())",
                           {PgParam::Int64(PostgresTelemetryStore::kLockKey)}));
  if (r.rows() == 0 || r.IsNull(0, 0)) return std::string();
  return r.Bytes(0, 0);
}

void PostgresLeaderDirectory::Lookup(absl::Time deadline, LookupCallback done) {
  std::string address;
  {
    absl::MutexLock lock(&mu_);
    // The forgotten address is still address_ until the read after Forget
    // is answered, which may be under way (stale_ already cleared).
    if (address_.empty() || stale_ || HeldBack(address_, absl::Now())) {
      waiters_.Add(deadline, std::move(done));
    } else {
      address = address_;
    }
  }
  if (address.empty()) {
    Wake();
    return;
  }
  done(address);
}

void PostgresLeaderDirectory::Forget(const std::string& address) {
  {
    absl::MutexLock lock(&mu_);
    if (address_ != address) return;
    stale_ = true;
    forgotten_ = address;
    forgotten_until_ = absl::Now() + std::min(options_.recheck, kForgetFor);
  }
  Wake();
}

bool PostgresLeaderDirectory::HeldBack(const std::string& address,
                                       absl::Time now) const {
  return address == forgotten_ && now < forgotten_until_;
}

bool PostgresLeaderDirectory::Known() {
  absl::MutexLock lock(&mu_);
  return !address_.empty();
}

int PostgresLeaderDirectory::queries() {
  absl::MutexLock lock(&mu_);
  return queries_;
}

void PostgresLeaderDirectory::Wake() {
  if (wake_write_ < 0) return;
  const char byte = 0;
  // A full pipe already wakes the thread.
  (void)!write(wake_write_, &byte, 1);
}

void PostgresLeaderDirectory::SetAddress(const std::string& address) {
  std::vector<LookupWaiters::Callback> answered;
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = address_.empty() != address.empty();
    address_ = address;
    if (!address.empty()) answered = waiters_.TakeAll();
  }
  if (changed && options_.on_known) options_.on_known(!address.empty());
  for (auto& done : answered) done(address);
}

void PostgresLeaderDirectory::ExpireWaiters(absl::Time now, bool all) {
  std::vector<LookupWaiters::Callback> expired;
  {
    absl::MutexLock lock(&mu_);
    expired = all ? waiters_.TakeAll() : waiters_.TakeExpired(now);
  }
  for (auto& done : expired) done(NoLeaderError());
}

bool PostgresLeaderDirectory::TakeNotifications(PgConnection& db) {
  bool notified = false;
  while (PGnotify* notify = PQnotifies(db.raw())) {
    PQfreemem(notify);
    notified = true;
  }
  if (notified) {
    absl::MutexLock lock(&mu_);
    stale_ = true;
    // A holder advertised just now, whatever its address: a live one, even
    // when it is the address just forgotten (a holder back on its old port).
    forgotten_.clear();
  }
  return notified;
}

void PostgresLeaderDirectory::Loop() {
  std::unique_ptr<PgConnection> db;
  absl::Time next_connect = absl::InfinitePast();
  absl::Time next_recheck = absl::InfinitePast();
  bool holding_back = false;
  for (;;) {
    bool waiting;
    bool stale;
    absl::Time nearest = absl::InfiniteFuture();
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      waiting = !waiters_.empty();
      nearest = waiters_.Nearest();
      stale = stale_;
    }
    absl::Time now = absl::Now();
    if (db == nullptr && now >= next_connect) {
      absl::StatusOr<std::unique_ptr<PgConnection>> connected =
          PgConnection::Connect(options_.dsn);
      if (connected.ok() &&
          (*connected)
              ->ExecScript(absl::StrCat("LISTEN ",
                                        PostgresTelemetryStore::kLeaderChannel))
              .ok()) {
        db = *std::move(connected);
        stale = true;
      } else {
        next_connect = now + options_.recheck;
      }
    }
    // While an address is held back (just forgotten), ask again every
    // kForgottenRecheck even without waiters, so that a holder that is in
    // fact alive is known again once the hold ends.
    if (db != nullptr &&
        (stale || ((waiting || holding_back) && now >= next_recheck))) {
      {
        absl::MutexLock lock(&mu_);
        stale_ = false;
        ++queries_;
      }
      if (options_.before_read) options_.before_read();
      absl::StatusOr<std::string> holder = ReadHolder(*db);
      next_recheck = now + options_.recheck;
      bool recently_forgotten;
      {
        absl::MutexLock lock(&mu_);
        recently_forgotten = holder.ok() && HeldBack(*holder, now);
      }
      holding_back = recently_forgotten;
      if (recently_forgotten) {
        // Its session may outlive its process by a moment (the lock is
        // still listed): ask again shortly rather than answer it.
        SetAddress("");
        next_recheck = now + std::min(options_.recheck, kForgottenRecheck);
      } else if (holder.ok()) {
        SetAddress(*holder);
      } else {
        db.reset();
        next_connect = now + options_.recheck;
      }
    }
    if (db == nullptr) SetAddress("");

    absl::Time until = now + options_.recheck;
    if (waiting) until = std::min(until, std::max(nearest, now));
    // The next recheck (it moves on each query, so this never spins).
    if ((waiting || holding_back) && db != nullptr) {
      until = std::min(until, next_recheck);
    }
    // A notification read with the last query's answer is already queued.
    if (db != nullptr && TakeNotifications(*db)) until = now;
    if (db == nullptr) until = std::min(until, next_connect);
    pollfd fds[2] = {{wake_read_, POLLIN, 0},
                     {db != nullptr ? db->socket() : -1, POLLIN, 0}};
    const int64_t ms = std::clamp<int64_t>(
        absl::ToInt64Milliseconds(until - absl::Now()) + 1, 0, 1000);
    poll(fds, 2, static_cast<int>(ms));
    char drain[64];
    while (wake_read_ >= 0 && read(wake_read_, drain, sizeof(drain)) > 0) {
    }
    if (db != nullptr) {
      if ((fds[1].revents & POLLIN) != 0 && PQconsumeInput(db->raw()) == 0) {
        db.reset();
        SetAddress("");
      } else {
        TakeNotifications(*db);
      }
    }
    ExpireWaiters(absl::Now(), false);
  }
  ExpireWaiters(absl::Now(), true);
}

}  // namespace server
}  // namespace gradnorm
