// A Communicator over Gloo (CPU, TCP): for trainers without NCCL, and the
// transport of gradnorm's multi-process tests.
//
// The ranks of a group meet through a rendezvous store: a directory that all
// of them can read and write (local disk for one host, a shared file system
// across hosts). Several groups (dp_cp, tp, job-wide) share one directory by
// using different group names. Use a fresh directory, or fresh group names, for
// each launch: keys left by an earlier launch would mislead the rendezvous.
//
//   GlooCommunicatorOptions options;
//   options.store_path = "/shared/run7/rendezvous";
//   options.group_name = "tp.dp3";
//   options.rank = tp_rank;
//   options.size = tp_size;
//   options.timeout = absl::Seconds(60);
//   ASSIGN_OR_RETURN(std::unique_ptr<GlooCommunicator> tp,
//                    GlooCommunicator::Create(options));
//
// `timeout` bounds the rendezvous and each collective: a peer that died or
// never comes makes the others fail within it (UNAVAILABLE as soon as a dead
// peer's connection breaks, DEADLINE_EXCEEDED otherwise) instead of hanging.
// kMax keeps NaN (a custom reduction, not Gloo's max). Create sets SIGPIPE to
// SIG_IGN when it still has its default action (as Python does), so a write to
// a dead peer fails the collective instead of killing the process.
//
// Thread-safety: one thread at a time per object.
#ifndef GRADNORM_CLIENT_GLOO_COMMUNICATOR_H_
#define GRADNORM_CLIENT_GLOO_COMMUNICATOR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/communicator.h"

namespace gloo {
class Context;
}  // namespace gloo

namespace gradnorm {

struct GlooCommunicatorOptions {
  // Rendezvous directory, shared by the group's processes; it must exist.
  std::string store_path;
  // The group's name, unique among the groups sharing store_path (key prefix).
  std::string group_name;
  int rank = 0;
  int size = 1;
  // The address this process accepts peer connections on.
  std::string hostname = "127.0.0.1";
  // Bound on the rendezvous and on each collective.
  absl::Duration timeout = absl::Seconds(30);
};

class GlooCommunicator final : public Communicator {
 public:
  // Connects to every other rank of the group (blocks until all have called
  // Create, or the timeout). INVALID_ARGUMENT for bad options (rank not in
  // [0, size), empty store_path or group_name, non-positive timeout);
  // NOT_FOUND when store_path is not a directory; DEADLINE_EXCEEDED or
  // UNAVAILABLE when the rendezvous fails.
  static absl::StatusOr<std::unique_ptr<GlooCommunicator>> Create(
      const GlooCommunicatorOptions& options);

  ~GlooCommunicator() override;
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override;
  absl::Status Broadcast(absl::Span<double> values, int root) override;
  absl::Status BroadcastBytes(std::string* bytes, int root) override;
  absl::Status Barrier() override;

 private:
  GlooCommunicator(std::shared_ptr<gloo::Context> context, std::string name,
                   int rank, int size, absl::Duration timeout);

  absl::Status CheckUsable() const;
  absl::Status CheckRoot(int root) const;
  // Records a failure so later calls fail fast.
  absl::Status Remember(absl::Status status);

  std::shared_ptr<gloo::Context> context_;  // null when size_ == 1
  const std::string name_;
  const int rank_;
  const int size_;
  const absl::Duration timeout_;
  absl::Status broken_;
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_GLOO_COMMUNICATOR_H_
