#include "server/store/leader_directory.h"

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

void MemoryLeaderDirectory::Set(const std::string& address) {
  std::vector<Waiter> answered;
  {
    absl::MutexLock lock(&mu_);
    address_ = address;
    if (!address.empty()) answered.swap(waiters_);
  }
  for (Waiter& waiter : answered) waiter.done(address);
}

void MemoryLeaderDirectory::ExpireWaiters(absl::Time now) {
  std::vector<Waiter> expired;
  {
    absl::MutexLock lock(&mu_);
    std::vector<Waiter> kept;
    for (Waiter& waiter : waiters_) {
      (waiter.deadline < now ? expired : kept).push_back(std::move(waiter));
    }
    waiters_.swap(kept);
  }
  for (Waiter& waiter : expired) waiter.done(NoLeaderError());
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
      waiters_.push_back({deadline, std::move(done)});
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
