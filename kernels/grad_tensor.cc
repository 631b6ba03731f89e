#include "kernels/grad_tensor.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace {

std::string DeviceName(const Device& device) {
  switch (device.kind) {
    case Device::Kind::kCpu:
      return "cpu";
    case Device::Kind::kCuda:
      return absl::StrCat("cuda:", device.index);
  }
  return absl::StrCat("device kind ", static_cast<int32_t>(device.kind));
}

}  // namespace

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "fp32";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat16:
      return "fp16";
    case DType::kFloat64:
      return "fp64";
  }
  return "unknown";
}

absl::StatusOr<size_t> DTypeSize(DType dtype) {
  if (const size_t size = ElementSize(dtype); size > 0) return size;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown dtype ", static_cast<int32_t>(dtype),
                   "; expected fp32 (0), bf16 (1), fp16 (2) or fp64 (3)"));
}

absl::Status ValidateTensors(absl::Span<const GradTensor> tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const GradTensor& t = tensors[i];
    if (t.dtype != DType::kFloat32 && t.dtype != DType::kBFloat16 &&
        t.dtype != DType::kFloat16 && t.dtype != DType::kFloat64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensors[", i, "]: unknown dtype ", static_cast<int32_t>(t.dtype),
          "; expected fp32 (0), bf16 (1), fp16 (2) or fp64 (3)"));
    }
    if (t.numel < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensors[", i, "]: numel is ", t.numel, "; expected >= 0"));
    }
    if (t.data == nullptr && t.numel > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "]: data is null with numel ", t.numel,
                       "; expected a non-null pointer when numel > 0"));
    }
    if (t.device.kind != Device::Kind::kCpu &&
        t.device.kind != Device::Kind::kCuda) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "]: unknown ", DeviceName(t.device),
                       "; expected cpu or cuda:N"));
    }
    if (t.device.kind == Device::Kind::kCuda && t.device.index < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "]: CUDA device index is ",
                       t.device.index, "; expected >= 0"));
    }
    if (t.device.kind == Device::Kind::kCuda && t.numel > 0) {
      const size_t size = *DTypeSize(t.dtype);
      if (reinterpret_cast<uintptr_t>(t.data) % size != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensors[", i, "]: CUDA data pointer ",
                         absl::Hex(reinterpret_cast<uintptr_t>(t.data)),
                         " is not aligned to its ", size,
                         "-byte elements; expected an "
                         "element-aligned pointer"));
      }
    }
    if (t.device != tensors[0].device) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "] is on ", DeviceName(t.device),
                       " but tensors[0] is on ", DeviceName(tensors[0].device),
                       "; expected all tensors on one device"));
    }
  }
  return absl::OkStatus();
}

}  // namespace gradnorm
