// A Communicator whose collectives are done by a Python object, so the C++
// GradNormClipper can reduce over torch.distributed process groups.
//
// The object provides rank(), size(), all_reduce(values: list[float], op:
// "sum" | "max") -> list[float] (max: NaN wins, see CombineValues),
// broadcast(values, root) -> list[float], broadcast_bytes(data: bytes, root)
// -> bytes and barrier(). gradnorm/torch.py's _GroupCommunicator implements it
// over a process group.
//
//   auto comm = std::make_unique<PyCommunicator>(py_object);  // GIL held
//   // later, from C++ code running without the GIL:
//   absl::Status s = comm->AllReduce(absl::MakeSpan(values), ReduceOp::kSum);
//
// Each call takes the GIL. A Python exception becomes UNAVAILABLE with its
// text (a failed collective leaves the group unusable, as in Communicator's
// contract); a result of the wrong length becomes INTERNAL.
//
// Thread-safety: like the Python object: one collective at a time.
#ifndef GRADNORM_CLIENT_PYTHON_PY_COMMUNICATOR_H_
#define GRADNORM_CLIENT_PYTHON_PY_COMMUNICATOR_H_

#include <pybind11/pybind11.h>

#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "client/communicator.h"

namespace gradnorm {
namespace python_internal {

class PyCommunicator final : public Communicator {
 public:
  // Reads rank() and size() once. Call with the GIL held.
  explicit PyCommunicator(pybind11::object impl);
  ~PyCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  absl::Status AllReduce(absl::Span<double> values, ReduceOp op) override;
  absl::Status Broadcast(absl::Span<double> values, int root) override;
  absl::Status BroadcastBytes(std::string* bytes, int root) override;
  absl::Status Barrier() override;

 private:
  pybind11::object impl_;
  int rank_;
  int size_;
};

}  // namespace python_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_PYTHON_PY_COMMUNICATOR_H_
