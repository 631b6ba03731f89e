// A non-owning view of one gradient tensor: where its elements are, how many,
// their dtype and the device that holds them. The kernels read and scale
// gradients through these views; they never allocate or free gradient memory.
//
//   std::vector<float> w(1024);
//   gradnorm::GradTensor view = gradnorm::GradTensor::Cpu(w.data(), w.size());
//
// Thread-safety: a plain value; the memory it points to is the caller's.
#ifndef GRADNORM_KERNELS_GRAD_TENSOR_H_
#define GRADNORM_KERNELS_GRAD_TENSOR_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace gradnorm {

// Element types of gradients. bf16 and fp16 are stored as uint16_t bit
// patterns.
enum class DType : int32_t {
  kFloat32 = 0,
  kBFloat16 = 1,
  kFloat16 = 2,
  kFloat64 = 3,
};

// "fp32", "bf16", "fp16", "fp64"; "unknown" for a value outside the enum.
absl::string_view DTypeName(DType dtype);

// Bytes per element; 0 for a value outside the enum (callers that have not
// validated the dtype use DTypeSize).
constexpr size_t ElementSize(DType dtype) {
  return dtype == DType::kFloat64                                ? 8
         : dtype == DType::kFloat32                              ? 4
         : dtype == DType::kBFloat16 || dtype == DType::kFloat16 ? 2
                                                                 : 0;
}

// ElementSize, or INVALID_ARGUMENT for a value outside the enum.
absl::StatusOr<size_t> DTypeSize(DType dtype);

// Where a tensor's memory lives: host memory, or the memory of CUDA device
// `index`.
struct Device {
  enum class Kind : int32_t { kCpu = 0, kCuda = 1 };
  Kind kind = Kind::kCpu;
  int32_t index = 0;

  static Device Cpu() { return Device{Kind::kCpu, 0}; }
  static Device Cuda(int32_t index) { return Device{Kind::kCuda, index}; }
  friend bool operator==(const Device& a, const Device& b) {
    return a.kind == b.kind && (a.kind == Kind::kCpu || a.index == b.index);
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// A view of `numel` contiguous elements of `dtype` at `data` on `device`.
// `data` may be null only when numel == 0. On the CPU any alignment is
// allowed; a CUDA tensor's data must be aligned to its element size (as every
// framework allocates them: a misaligned load faults the GPU's context).
struct GradTensor {
  void* data = nullptr;
  int64_t numel = 0;
  DType dtype = DType::kFloat32;
  Device device = Device::Cpu();
  // True for a tensor replicated across tensor-parallel ranks (not sharded
  // there: layer norms, biases). The kernels ignore it; the client counts such
  // tensors on TP rank 0 only.
  bool tp_replicated = false;
  // True for a replica that another rank counts (a tensor replicated over a
  // data-parallel mesh dimension, held at a coordinate other than 0): the
  // kernels ignore it; the client validates and clips it but never counts it.
  bool counted_elsewhere = false;

  static GradTensor Cpu(float* data, int64_t numel) {
    return GradTensor{data, numel, DType::kFloat32, Device::Cpu(), false};
  }
  static GradTensor Cpu(double* data, int64_t numel) {
    return GradTensor{data, numel, DType::kFloat64, Device::Cpu(), false};
  }
  // bf16 or fp16 bit patterns.
  static GradTensor Cpu(uint16_t* data, int64_t numel, DType dtype) {
    return GradTensor{data, numel, dtype, Device::Cpu(), false};
  }
};

// Checks every view: known dtype, numel >= 0, data non-null when numel > 0, and
// all on one device. INVALID_ARGUMENT names the first bad tensor by index and
// says what was expected.
absl::Status ValidateTensors(absl::Span<const GradTensor> tensors);

}  // namespace gradnorm

#endif  // GRADNORM_KERNELS_GRAD_TENSOR_H_
