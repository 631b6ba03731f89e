#include "client/in_memory_communicator.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace gradnorm {
namespace {

// What one rank brought to one collective: a description of the call (so
// mismatched calls are detected, as a real transport would hang or corrupt on
// them) and its data.
struct Contribution {
  std::string call;
  std::string data;
};

// The state the ranks of one group share.
class Group {
 public:
  Group(int size, absl::Duration timeout) : size_(size), timeout_(timeout) {}

  int size() const { return size_; }

  // Deposits `mine` as `rank`'s part of its `seq`-th collective and returns
  // every rank's part in rank order once all have arrived.
  absl::StatusOr<std::vector<Contribution>> Exchange(int rank, uint64_t seq,
                                                     Contribution mine) {
    absl::MutexLock lock(&mu_);
    // std::map: rounds must not move while other ranks wait on them.
    Round& round = rounds_[seq];
    if (round.parts.empty()) round.parts.resize(size_);
    round.parts[rank] = std::move(mine);
    ++round.arrived;
    AllArrived all_arrived{&round, size_};
    if (!mu_.AwaitWithTimeout(absl::Condition(&all_arrived), timeout_)) {
      // The round stays behind: this rank's communicator is broken now and
      // never asks for it again.
      return absl::DeadlineExceededError(absl::StrCat(
          "in-memory collective #", seq, " (", round.parts[rank].call,
          "): only ", round.arrived, " of ", size_, " ranks joined within ",
          absl::FormatDuration(timeout_)));
    }
    std::vector<Contribution> parts = round.parts;
    if (++round.departed == size_) rounds_.erase(seq);
    return parts;
  }

 private:
  struct Round {
    std::vector<Contribution> parts;
    int arrived = 0;
    int departed = 0;
  };
  struct AllArrived {
    const Round* round;
    int size;
    bool operator()() const { return round->arrived == size; }
  };

  const int size_;
  const absl::Duration timeout_;
  absl::Mutex mu_;
  std::map<uint64_t, Round> rounds_ ABSL_GUARDED_BY(mu_);
};

std::string ToBytes(absl::Span<const double> values) {
  std::string bytes(values.size() * sizeof(double), '\0');
  if (!values.empty()) std::memcpy(&bytes[0], values.data(), bytes.size());
  return bytes;
}

class InMemoryCommunicator final : public Communicator {
 public:
  InMemoryCommunicator(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }

  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override {
    if (op != ReduceOp::kSum && op != ReduceOp::kMax) {
      return absl::InvalidArgumentError(
          "unknown reduce op: expected sum or max");
    }
    absl::StatusOr<std::vector<Contribution>> parts =
        Run({absl::StrCat("all-reduce ", ReduceOpName(op), " of ",
                          values.size(), " values"),
             ToBytes(values)});
    if (!parts.ok()) return parts.status();
    for (size_t i = 0; i < values.size(); ++i) {
      double acc;
      std::memcpy(&acc, &(*parts)[0].data[i * sizeof(double)], sizeof(double));
      for (int r = 1; r < size(); ++r) {
        double v;
        std::memcpy(&v, &(*parts)[r].data[i * sizeof(double)], sizeof(double));
        acc = CombineValues(op, acc, v);
      }
      values[i] = acc;
    }
    return absl::OkStatus();
  }

  absl::Status Broadcast(absl::Span<double> values, int root) override {
    if (absl::Status s = CheckRoot(root); !s.ok()) return s;
    absl::StatusOr<std::vector<Contribution>> parts =
        Run({absl::StrCat("broadcast of ", values.size(), " values from rank ",
                          root),
             rank_ == root ? ToBytes(values) : std::string()});
    if (!parts.ok()) return parts.status();
    if (!values.empty()) {
      std::memcpy(values.data(), (*parts)[root].data.data(),
                  values.size() * sizeof(double));
    }
    return absl::OkStatus();
  }

  absl::Status BroadcastBytes(std::string* bytes, int root) override {
    if (absl::Status s = CheckRoot(root); !s.ok()) return s;
    absl::StatusOr<std::vector<Contribution>> parts =
        Run({absl::StrCat("byte broadcast from rank ", root),
             rank_ == root ? *bytes : std::string()});
    if (!parts.ok()) return parts.status();
    *bytes = std::move((*parts)[root].data);
    return absl::OkStatus();
  }

  absl::Status Barrier() override { return Run({"barrier", ""}).status(); }

 private:
  absl::Status CheckRoot(int root) const {
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("broadcast root ", root,
                       " is out of range: expected [0, ", size(), ")"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<Contribution>> Run(Contribution mine) {
    if (!broken_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "communicator unusable after an earlier error: ", broken_.message()));
    }
    absl::StatusOr<std::vector<Contribution>> parts =
        group_->Exchange(rank_, next_seq_++, mine);
    if (parts.ok()) {
      for (int r = 0; r < size(); ++r) {
        if ((*parts)[r].call != mine.call) {
          parts = absl::InvalidArgumentError(absl::StrCat(
              "ranks called different collectives: rank ", rank_, " called ",
              mine.call, ", rank ", r, " called ", (*parts)[r].call));
          break;
        }
      }
    }
    if (!parts.ok()) broken_ = parts.status();
    return parts;
  }

  const std::shared_ptr<Group> group_;
  const int rank_;
  uint64_t next_seq_ = 0;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateInMemoryGroup(
    int size, absl::Duration timeout) {
  if (size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("group size ", size, " is invalid: expected >= 1"));
  }
  if (timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout ", absl::FormatDuration(timeout),
                     " is invalid: expected > 0"));
  }
  auto group = std::make_shared<Group>(size, timeout);
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < size; ++r) {
    comms.push_back(std::make_unique<InMemoryCommunicator>(group, r));
  }
  return comms;
}

}  // namespace gradnorm
