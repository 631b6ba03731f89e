// The gRPC service of a replica (--replica): every call, of any method of any
// service the replica does not serve itself, is forwarded whole to the
// coordinator that holds the database, where the LeaderDirectory says it
// serves, and its messages and status come back unchanged. The replica decides
// nothing: rounds, policies and history are that coordinator's, so every
// participant of a round gets the same answer whichever replica it reached.
//
//   ForwardingService forwarding({.directory = directory.get()});
//   builder.RegisterCallbackGenericService(&forwarding);
//
// A call is forwarded as it comes: unary calls, WatchRun's stream of rounds
// and ReportStream's two streams alike, message by message, with the
// client's metadata (its bearer token: the holder authenticates it) and
// deadline. When no holder is known the call waits for one, up to
// `max_wait` or its deadline, then fails UNAVAILABLE. When the holder cannot
// be reached (it died: UNAVAILABLE), the call fails UNAVAILABLE, the
// directory forgets that address, and the client's retry is forwarded to the
// next holder. Reports are idempotent, so a retry never counts twice.
//
// Thread-safety: gRPC's; the service may serve any number of calls at once.
#ifndef GRADNORM_SERVER_RPC_FORWARDING_SERVICE_H_
#define GRADNORM_SERVER_RPC_FORWARDING_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "server/store/leader_directory.h"

namespace gradnorm {
namespace server {

struct ForwardingOptions {
  // Not owned; must outlive the service.
  LeaderDirectory* directory = nullptr;
  // How long a call waits for a holder when none is known.
  absl::Duration max_wait = absl::Seconds(10);
  // How to reach the holder: plaintext when null; TLS credentials when the
  // coordinators serve TLS (with this replica's certificate when they
  // require client certificates).
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The name the holder's certificate is checked against (the addresses
  // are IPs); empty: the address's host.
  std::string server_name;
};

class ForwardingService final : public grpc::CallbackGenericService {
 public:
  explicit ForwardingService(ForwardingOptions options);
  ~ForwardingService() override;

  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override;

  // Calls forwarded (started on the holder) so far.
  uint64_t forwarded() const { return forwarded_.load(); }

 private:
  friend class ForwardedCall;
  // A channel to one holder.
  struct Upstream {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<grpc::GenericStub> stub;
  };
  std::shared_ptr<Upstream> UpstreamFor(const std::string& address);
  // A call to the holder that advertised `advertised` failed UNAVAILABLE: a
  // fresh channel next time (the old one may be backing off), and the
  // directory asks again.
  void Failed(const std::string& advertised, const Upstream* upstream);

  const ForwardingOptions options_;
  std::atomic<uint64_t> forwarded_{0};
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Upstream>> upstreams_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace server
}  // namespace gradnorm

#endif  // GRADNORM_SERVER_RPC_FORWARDING_SERVICE_H_
