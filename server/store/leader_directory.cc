#include "server/store/leader_directory.h"

#include <algorithm>
#include <utility>

namespace gradnorm {
namespace server {

absl::Status NoLeaderError() {
  return absl::UnavailableError(
      "no coordinator holds the database yet (replicas forward to the one "
      "that does); retry");
}

std::string FormatAdvertised(const AdvertisedAddresses& addresses) {
  if (addresses.http.empty()) return addresses.grpc;
  return addresses.grpc + " http=" + addresses.http;
}

AdvertisedAddresses ParseAdvertised(const std::string& advertised) {
  AdvertisedAddresses addresses;
  const size_t space = advertised.find(' ');
  addresses.grpc = advertised.substr(0, space);
  if (space != std::string::npos) {
    const std::string rest = advertised.substr(space + 1);
    if (rest.rfind("http=", 0) == 0) addresses.http = rest.substr(5);
  }
  return addresses;
}

void LookupWaiters::Add(absl::Time deadline, Callback done) {
  waiters_.push_back({deadline, std::move(done)});
}

absl::Time LookupWaiters::Nearest() const {
  absl::Time nearest = absl::InfiniteFuture();
  for (const Waiter& waiter : waiters_) {
    nearest = std::min(nearest, waiter.deadline);
  }
  return nearest;
}

std::vector<LookupWaiters::Callback> LookupWaiters::TakeAll() {
  std::vector<Callback> taken;
  for (Waiter& waiter : waiters_) taken.push_back(std::move(waiter.done));
  waiters_.clear();
  return taken;
}

std::vector<LookupWaiters::Callback> LookupWaiters::TakeExpired(
    absl::Time now) {
  std::vector<Callback> taken;
  std::vector<Waiter> kept;
  for (Waiter& waiter : waiters_) {
    if (waiter.deadline <= now) {
      taken.push_back(std::move(waiter.done));
    } else {
      kept.push_back(std::move(waiter));
    }
  }
  waiters_.swap(kept);
  return taken;
}

void MemoryLeaderDirectory::Set(const std::string& address) {
  std::vector<LookupWaiters::Callback> answered;
  {
    absl::MutexLock lock(&mu_);
    address_ = address;
    if (!address.empty()) answered = waiters_.TakeAll();
  }
  for (auto& done : answered) done(address);
}

void MemoryLeaderDirectory::ExpireWaiters(absl::Time now) {
  std::vector<LookupWaiters::Callback> expired;
  {
    absl::MutexLock lock(&mu_);
    expired = waiters_.TakeExpired(now);
  }
  for (auto& done : expired) done(NoLeaderError());
}

int MemoryLeaderDirectory::forgotten() {
  absl::MutexLock lock(&mu_);
  return forgotten_;
}

void MemoryLeaderDirectory::Lookup(absl::Time deadline, LookupCallback done) {
  std::string address;
  {
    absl::MutexLock lock(&mu_);
    if (address_.empty()) {
      waiters_.Add(deadline, std::move(done));
      return;
    }
    address = address_;
  }
  done(address);
}

void MemoryLeaderDirectory::Forget(const std::string& address) {
  absl::MutexLock lock(&mu_);
  ++forgotten_;
}

bool MemoryLeaderDirectory::Known() {
  absl::MutexLock lock(&mu_);
  return !address_.empty();
}

}  // namespace server
}  // namespace gradnorm
