// Reads the C ABI's gn_tensors (parallel arrays) into GradTensor views.
//
//   ASSIGN_OR_RETURN(TensorViews views, ReadTensors(tensors));
//   RETURN_IF_ERROR(views.input_error);   // or hand it to GetGradNorm
//
// Thread-safety: a pure function.
#ifndef GRADNORM_CLIENT_C_API_INTERNAL_TENSORS_H_
#define GRADNORM_CLIENT_C_API_INTERNAL_TENSORS_H_

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/c_api/gradnorm.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace c_api_internal {

struct TensorViews {
  std::vector<GradTensor> grads;
  // INVALID_ARGUMENT when the caller set gn_tensors.error, or named a device
  // or replication value gradnorm does not know; the views are then those
  // that could be read (the call must still join its collectives).
  absl::Status input_error;
};

// INVALID_ARGUMENT only for a null `tensors`, or null data/numel arrays with
// count > 0: nothing can be read then. Element values are checked later, by
// the library's own validation (ValidateTensors) or into input_error.
absl::StatusOr<TensorViews> ReadTensors(const gn_tensors* tensors);

}  // namespace c_api_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_C_API_INTERNAL_TENSORS_H_
