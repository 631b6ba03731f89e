// Collectives over a group of ranks: the I/O seam between GetGradNorm /
// GradNormClipper and the transport (NCCL, Gloo, in-memory, single process).
//
// Only what gradient-norm aggregation needs: an all-reduce of a few fp64
// values, a broadcast of fp64 values or a small byte string from a root, and a
// barrier. Every rank of the group must make the same sequence of calls (as
// with any collective library). A failed call leaves the communicator unusable:
// later calls fail with FAILED_PRECONDITION naming the first error.
//
//   std::unique_ptr<Communicator> comm = ...;  // e.g. GlooCommunicator::Create
//   double partial[2] = {local_sum, local_count};
//   RETURN_IF_ERROR(comm->AllReduce(absl::MakeSpan(partial), ReduceOp::kSum));
//
// Reductions (normative): kSum adds in IEEE fp64 (a NaN
// anywhere gives NaN); kMax returns NaN when any rank holds NaN, otherwise the
// largest value (+Inf beats finite values). Implementations must keep this NaN
// rule even where the transport's native max drops NaN.
//
// Errors: DEADLINE_EXCEEDED when peers did not join within the communicator's
// timeout, UNAVAILABLE when a peer's connection broke (it died),
// INVALID_ARGUMENT for bad arguments (root out of range), FAILED_PRECONDITION
// after an earlier error, INTERNAL for transport errors.
//
// Thread-safety: one thread at a time per Communicator object (collectives are
// ordered); different objects are independent.
#ifndef GRADNORM_CLIENT_COMMUNICATOR_H_
#define GRADNORM_CLIENT_COMMUNICATOR_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gradnorm {

enum class ReduceOp {
  kSum = 0,
  kMax = 1,
};

// "sum" or "max".
absl::string_view ReduceOpName(ReduceOp op);

// Combines two values under `op` with the NaN rule above. Implementations use
// it so every transport reduces identically.
double CombineValues(ReduceOp op, double a, double b);

class Communicator {
 public:
  virtual ~Communicator() = default;

  // This process's rank in [0, size()) and the group's size (>= 1).
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Replaces `values` (host memory, the same length on every rank) by their
  // element-wise reduction over the group.
  virtual absl::Status AllReduce(absl::Span<double> values, ReduceOp op) = 0;

  // Copies `values` (the same length on every rank) of rank `root` to every
  // rank.
  virtual absl::Status Broadcast(absl::Span<double> values, int root) = 0;

  // Replaces `*bytes` on every rank by the root's `*bytes` (any length; the
  // other ranks' input is ignored).
  virtual absl::Status BroadcastBytes(std::string* bytes, int root) = 0;

  // Returns once every rank has called Barrier.
  virtual absl::Status Barrier() = 0;
};

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_COMMUNICATOR_H_
