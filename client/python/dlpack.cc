#include "client/python/dlpack.h"

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"

namespace gradnorm {
namespace python_internal {
namespace {

absl::StatusOr<DType> ToDType(const DLDataType& dtype) {
  if (dtype.lanes == 1) {
    if (dtype.code == kDLFloat && dtype.bits == 32) return DType::kFloat32;
    if (dtype.code == kDLBfloat && dtype.bits == 16) return DType::kBFloat16;
    if (dtype.code == kDLFloat && dtype.bits == 16) return DType::kFloat16;
    if (dtype.code == kDLFloat && dtype.bits == 64) return DType::kFloat64;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "DLPack dtype (code ", dtype.code, ", bits ", dtype.bits, ", lanes ",
      dtype.lanes,
      ") is not supported; expected float32, bfloat16, float16 or float64"));
}

absl::StatusOr<Device> ToDevice(const DLDevice& device) {
  switch (device.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      return Device::Cpu();
    case kDLCUDA:
      return Device::Cuda(device.device_id);
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "DLPack device type ", device.device_type,
          " is not supported; expected CPU (1), CUDA (2) or CUDA host (3)"));
  }
}

}  // namespace

absl::StatusOr<GradTensor> GradTensorFromDLTensor(const DLTensor& tensor) {
  absl::StatusOr<DType> dtype = ToDType(tensor.dtype);
  if (!dtype.ok()) return dtype.status();
  absl::StatusOr<Device> device = ToDevice(tensor.device);
  if (!device.ok()) return device.status();
  if (tensor.ndim < 0 || (tensor.ndim > 0 && tensor.shape == nullptr)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "DLPack tensor has ndim ", tensor.ndim,
        " without a shape; expected ndim >= 0 and a shape array"));
  }
  absl::Span<const int64_t> shape(tensor.shape, tensor.ndim);
  int64_t numel = 1;
  for (int64_t extent : shape) {
    if (extent < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("DLPack tensor has shape [", absl::StrJoin(shape, ", "),
                       "]; expected non-negative extents"));
    }
    numel *= extent;
  }
  // Row-major compact: walking dimensions from the last, each stride equals
  // the product of the later extents. Extents of 1 (and empty tensors) never
  // address memory through their stride, so any stride is fine there.
  if (tensor.strides != nullptr && numel > 0) {
    int64_t expected = 1;
    for (int32_t d = tensor.ndim - 1; d >= 0; --d) {
      if (shape[d] != 1 && tensor.strides[d] != expected) {
        return absl::InvalidArgumentError(absl::StrCat(
            "DLPack tensor of shape [", absl::StrJoin(shape, ", "),
            "] has strides [",
            absl::StrJoin(absl::MakeConstSpan(tensor.strides, tensor.ndim), ", "),
            "]; expected a contiguous (row-major) tensor: call .contiguous()"));
      }
      expected *= shape[d];
    }
  }
  if (numel > 0 && tensor.data == nullptr) {
    return absl::InvalidArgumentError(
        "DLPack tensor has elements but a null data pointer");
  }
  GradTensor view;
  view.data = numel == 0 ? nullptr
                         : static_cast<char*>(tensor.data) + tensor.byte_offset;
  view.numel = numel;
  view.dtype = *dtype;
  view.device = *device;
  return view;
}

}  // namespace python_internal
}  // namespace gradnorm
