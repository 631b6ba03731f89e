// The in-memory twin of the Gloo and NCCL communicators: a group of `size`
// Communicator objects in one process that reduce through shared memory, each
// driven by its own thread. Unit tests run multi-rank logic (TP/DP groups,
// NaN propagation, a rank that never joins) fast and deterministically with it.
//
//   ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Communicator>> comms,
//                    CreateInMemoryGroup(2, absl::Seconds(5)));
//   std::thread peer([&] { double v = 1; comms[1]->AllReduce(
//                              absl::MakeSpan(&v, 1), ReduceOp::kSum); });
//   double v = 2;
//   RETURN_IF_ERROR(comms[0]->AllReduce(absl::MakeSpan(&v, 1),
//   ReduceOp::kSum)); peer.join();  // v == 3 on both ranks
//
// Reductions combine values in rank order, so results are bitwise identical
// from run to run. A collective that not every rank joins within `timeout`
// fails with DEADLINE_EXCEEDED on the ranks that did; ranks whose calls do not
// match (different operation, length or root) fail with INVALID_ARGUMENT.
//
// Thread-safety: each Communicator of the group is used by one thread at a
// time; the group's shared state is internally synchronized and lives as long
// as any of its communicators.
#ifndef GRADNORM_CLIENT_IN_MEMORY_COMMUNICATOR_H_
#define GRADNORM_CLIENT_IN_MEMORY_COMMUNICATOR_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/communicator.h"

namespace gradnorm {

// `size` >= 1 communicators with ranks 0..size-1. INVALID_ARGUMENT for
// size < 1 or a non-positive timeout.
absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateInMemoryGroup(
    int size, absl::Duration timeout);

}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_IN_MEMORY_COMMUNICATOR_H_
