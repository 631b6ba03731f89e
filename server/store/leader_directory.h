// Where the coordinator that holds the database serves: replicas
// (--replica) forward every call there (server/rpc/forwarding_service.h).
// The PostgreSQL directory (postgres_leader_directory.h) reads it from the
// database and learns of a new holder through LISTEN/NOTIFY; the memory one
// below is set by hand, for tests of what uses a directory.
//
//   directory->Lookup(deadline, [](absl::StatusOr<std::string> address) {
//     // "10.0.3.7:50053 http=10.0.3.7:9465" (ParseAdvertised), or
//     // UNAVAILABLE at the deadline without a holder
//   });
//   directory->Forget(address);   // a call to it failed: look again
//
// Thread-safety: every method of every implementation may be called from any
// thread; callbacks run on the caller's thread (when the answer is known at
// once) or on the directory's own, never under its locks.
#ifndef GRADNORM_SERVER_STORE_LEADER_DIRECTORY_H_
#define GRADNORM_SERVER_STORE_LEADER_DIRECTORY_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace gradnorm {
namespace server {

class LeaderDirectory {
 public:
  using LookupCallback = std::function<void(absl::StatusOr<std::string>)>;
  virtual ~LeaderDirectory() = default;

  // Calls `done` once: with the holder's host:port as soon as one is known
  // (at once when it already is), or with UNAVAILABLE at `deadline`.
  virtual void Lookup(absl::Time deadline, LookupCallback done) = 0;
  // A call to `address` failed as if nothing served there: the next Lookup
  // asks again instead of answering it. No effect when the directory already
  // knows another address.
  virtual void Forget(const std::string& address) = 0;
  // Whether a holder is known now (the replica's health).
  virtual bool Known() = 0;
};

// The lookups a directory holds until it knows a holder or their deadlines
// pass: each directory keeps one under its own mutex, and calls what Take*
// returns after releasing it.
class LookupWaiters {
 public:
  using Callback = std::function<void(absl::StatusOr<std::string>)>;
  void Add(absl::Time deadline, Callback done);
  bool empty() const { return waiters_.empty(); }
  // The earliest deadline (InfiniteFuture when none waits).
  absl::Time Nearest() const;
  // Every waiter's callback, removed.
  std::vector<Callback> TakeAll();
  // The callbacks of the waiters whose deadline is at or before `now`.
  std::vector<Callback> TakeExpired(absl::Time now);

 private:
  struct Waiter {
    absl::Time deadline;
    Callback done;
  };
  std::vector<Waiter> waiters_;
};

// A directory whose holder the test sets. Lookup waits (without a thread:
// Set answers the waiters, and so does ExpireWaiters at their deadlines).
class MemoryLeaderDirectory final : public LeaderDirectory {
 public:
  // "" : no holder.
  void Set(const std::string& address);
  // Answers UNAVAILABLE to the waiters whose deadline is at or before `now`.
  void ExpireWaiters(absl::Time now);
  // Forget calls so far.
  int forgotten();

  void Lookup(absl::Time deadline, LookupCallback done) override;
  void Forget(const std::string& address) override;
  bool Known() override;

 private:
  absl::Mutex mu_;
  std::string address_ ABSL_GUARDED_BY(mu_);
  LookupWaiters waiters_ ABSL_GUARDED_BY(mu_);
  int forgotten_ ABSL_GUARDED_BY(mu_) = 0;
};

// The error a Lookup answers at its deadline.
absl::Status NoLeaderError();

// What the holder advertises, in one string: its gRPC address for forwarded
// calls, and, when it serves HTTP, its HTTP address for relayed connections:
// "10.0.3.7:50053" or "10.0.3.7:50053 http=10.0.3.7:9465".
struct AdvertisedAddresses {
  std::string grpc;
  std::string http;  // empty: no HTTP port
};
std::string FormatAdvertised(const AdvertisedAddresses& addresses);
AdvertisedAddresses ParseAdvertised(const std::string& advertised);

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_STORE_LEADER_DIRECTORY_H_
