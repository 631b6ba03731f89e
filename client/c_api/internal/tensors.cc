#include "client/c_api/internal/tensors.h"

#include <cstdint>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace c_api_internal {

absl::StatusOr<TensorViews> ReadTensors(const gn_tensors* tensors) {
  if (tensors == nullptr) {
    return absl::InvalidArgumentError(
        "tensors is null; expected a gn_tensors (count 0 for no tensors)");
  }
  const size_t n = tensors->count;
  if (n > 0 && (tensors->data == nullptr || tensors->numel == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gn_tensors with count ", n,
        " has a null data or numel array; expected both to hold count values"));
  }
  TensorViews views;
  views.grads.resize(n);
  for (size_t i = 0; i < n; ++i) {
    GradTensor& g = views.grads[i];
    g.data = reinterpret_cast<void*>(static_cast<uintptr_t>(tensors->data[i]));
    g.numel = tensors->numel[i];
    // An unknown dtype value passes through: ValidateTensors names it.
    if (tensors->dtype != nullptr)
      g.dtype = static_cast<DType>(tensors->dtype[i]);
    const int32_t device =
        tensors->device == nullptr ? GN_DEVICE_CPU : tensors->device[i];
    if (device >= 0) {
      g.device = Device::Cuda(device);
    } else if (device != GN_DEVICE_CPU && views.input_error.ok()) {
      views.input_error = absl::InvalidArgumentError(absl::StrCat(
          "tensors[", i, "] is on device ", device,
          device == GN_DEVICE_OTHER ? " (neither cpu nor cuda)" : "",
          "; expected cpu (-1) or a cuda device index >= 0"));
    }
    const uint8_t replication =
        tensors->replication == nullptr ? GN_SHARDED : tensors->replication[i];
    g.tp_replicated = replication == GN_TP_REPLICATED;
    g.counted_elsewhere = replication == GN_COUNTED_ELSEWHERE;
    if (replication > GN_COUNTED_ELSEWHERE && views.input_error.ok()) {
      views.input_error = absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "] has replication ", replication,
                       "; expected GN_SHARDED (0), GN_TP_REPLICATED (1) or "
                       "GN_COUNTED_ELSEWHERE (2)"));
    }
  }
  // The caller's own finding comes first: it is the most precise.
  if (tensors->error != nullptr) {
    views.input_error = absl::InvalidArgumentError(tensors->error);
  }
  return views;
}

}  // namespace c_api_internal
}  // namespace gradnorm
