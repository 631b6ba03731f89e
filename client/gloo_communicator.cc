#include "client/gloo_communicator.h"

#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/gloo_errors.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/rendezvous/context.h"
#include "gloo/rendezvous/file_store.h"
#include "gloo/rendezvous/prefix_store.h"
#include "gloo/transport/tcp/device.h"

namespace gradnorm {
namespace {

std::chrono::milliseconds ToChrono(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

// Gloo's reduction callbacks: (output, input a, input b, count) over doubles,
// through the one combine rule every transport shares.
template <ReduceOp kOp>
void Combine(void* out, const void* a, const void* b, size_t n) {
  double* o = static_cast<double*>(out);
  const double* x = static_cast<const double*>(a);
  const double* y = static_cast<const double*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = CombineValues(kOp, x[i], y[i]);
}

// Gloo's TCP transport can write to a connection whose peer just died; with
// SIGPIPE's default action that kills this process instead of surfacing as
// UNAVAILABLE. Ignore it, unless the program installed its own handler.
void IgnoreSigpipeUnlessHandled() {
  struct sigaction current;
  if (sigaction(SIGPIPE, nullptr, &current) == 0 &&
      current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<GlooCommunicator>> GlooCommunicator::Create(
    const GlooCommunicatorOptions& options) {
  if (options.size < 1 || options.rank < 0 || options.rank >= options.size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", options.rank, " of size ", options.size,
                     " is invalid: expected size >= 1 and 0 <= rank < size"));
  }
  if (options.store_path.empty() || options.group_name.empty()) {
    return absl::InvalidArgumentError(
        "store_path and group_name must both be set");
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout ", absl::FormatDuration(options.timeout),
                     " is invalid: expected > 0"));
  }
  IgnoreSigpipeUnlessHandled();
  struct stat st;
  if (stat(options.store_path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::NotFoundError(
        absl::StrCat("rendezvous directory ", options.store_path,
                     " does not exist: expected a directory all ranks share"));
  }
  const std::string name =
      absl::StrCat("gloo group '", options.group_name, "' (rank ", options.rank,
                   " of ", options.size, ")");
  std::shared_ptr<gloo::Context> context;
  if (options.size > 1) {
    std::shared_ptr<gloo::rendezvous::Context> rendezvous;
    absl::Status status = CallGloo(absl::StrCat("rendezvous of ", name), [&] {
      gloo::transport::tcp::attr attr;
      attr.hostname = options.hostname;
      std::shared_ptr<gloo::transport::Device> device =
          gloo::transport::tcp::CreateDevice(attr);
      rendezvous = std::make_shared<gloo::rendezvous::Context>(options.rank,
                                                               options.size);
      rendezvous->setTimeout(ToChrono(options.timeout));
      gloo::rendezvous::FileStore file_store(options.store_path);
      gloo::rendezvous::PrefixStore store(options.group_name, file_store);
      rendezvous->connectFullMesh(store, device);
    });
    if (!status.ok()) return status;
    context = std::move(rendezvous);
  }
  return std::unique_ptr<GlooCommunicator>(new GlooCommunicator(
      std::move(context), name, options.rank, options.size, options.timeout));
}

GlooCommunicator::GlooCommunicator(std::shared_ptr<gloo::Context> context,
                                   std::string name, int rank, int size,
                                   absl::Duration timeout)
    : context_(std::move(context)),
      name_(std::move(name)),
      rank_(rank),
      size_(size),
      timeout_(timeout) {}

GlooCommunicator::~GlooCommunicator() = default;

absl::Status GlooCommunicator::CheckUsable() const {
  if (!broken_.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        name_, " unusable after an earlier error: ", broken_.message()));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::CheckRoot(int root) const {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " is out of range: expected [0, ",
                     size_, ")"));
  }
  return absl::OkStatus();
}

absl::Status GlooCommunicator::Remember(absl::Status status) {
  if (!status.ok()) broken_ = status;
  return status;
}

absl::Status GlooCommunicator::AllReduce(absl::Span<double> values,
                                         ReduceOp op) {
  if (op != ReduceOp::kSum && op != ReduceOp::kMax) {
    return absl::InvalidArgumentError("unknown reduce op: expected sum or max");
  }
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (size_ == 1 || values.empty()) return absl::OkStatus();
  return Remember(CallGloo(
      absl::StrCat("all-reduce ", ReduceOpName(op), " in ", name_), [&] {
        gloo::AllreduceOptions opts(context_);
        opts.setOutput(values.data(), values.size());
        opts.setReduceFunction(op == ReduceOp::kSum ? &Combine<ReduceOp::kSum>
                                                    : &Combine<ReduceOp::kMax>);
        opts.setTimeout(ToChrono(timeout_));
        gloo::allreduce(opts);
      }));
}

absl::Status GlooCommunicator::Broadcast(absl::Span<double> values, int root) {
  if (absl::Status s = CheckRoot(root); !s.ok()) return s;
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (size_ == 1 || values.empty()) return absl::OkStatus();
  return Remember(
      CallGloo(absl::StrCat("broadcast from rank ", root, " in ", name_), [&] {
        gloo::BroadcastOptions opts(context_);
        opts.setOutput(values.data(), values.size());
        opts.setRoot(root);
        opts.setTimeout(ToChrono(timeout_));
        gloo::broadcast(opts);
      }));
}

absl::Status GlooCommunicator::BroadcastBytes(std::string* bytes, int root) {
  if (absl::Status s = CheckRoot(root); !s.ok()) return s;
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (size_ == 1) return absl::OkStatus();
  // The length first, so every rank can size its buffer.
  uint64_t length = rank_ == root ? bytes->size() : 0;
  absl::Status status = CallGloo(
      absl::StrCat("byte broadcast from rank ", root, " in ", name_), [&] {
        gloo::BroadcastOptions opts(context_);
        opts.setOutput(&length, 1);
        opts.setRoot(root);
        opts.setTimeout(ToChrono(timeout_));
        gloo::broadcast(opts);
        if (length == 0) return;
        bytes->resize(length);
        gloo::BroadcastOptions data(context_);
        data.setOutput(reinterpret_cast<uint8_t*>(&(*bytes)[0]), length);
        data.setRoot(root);
        data.setTimeout(ToChrono(timeout_));
        gloo::broadcast(data);
      });
  if (status.ok() && length == 0) bytes->clear();
  return Remember(status);
}

absl::Status GlooCommunicator::Barrier() {
  if (absl::Status s = CheckUsable(); !s.ok()) return s;
  if (size_ == 1) return absl::OkStatus();
  return Remember(CallGloo(absl::StrCat("barrier in ", name_), [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTimeout(ToChrono(timeout_));
    gloo::barrier(opts);
  }));
}

}  // namespace gradnorm
