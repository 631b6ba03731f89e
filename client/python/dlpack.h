// DLPack: how gradnorm's Python binding receives tensors from torch, numpy or
// any other producer without copying them.
//
// The structs below reproduce the ABI of DLPack (github.com/dmlc/dlpack,
// include/dlpack/dlpack.h, versions 0.5 to 0.8, which torch >= 1.10 and
// numpy >= 1.22 export): a producer hands over a PyCapsule named "dltensor"
// holding a DLManagedTensor*. The consumer renames the capsule to
// "used_dltensor" (so the capsule's destructor no longer frees it) and calls
// `deleter` once it no longer reads the memory. Only the fields gradnorm reads
// are documented; the layout is the C ABI and must not change.
//
//   const DLTensor& t = managed->dl_tensor;
//   absl::StatusOr<GradTensor> view = GradTensorFromDLTensor(t);
//
// Thread-safety: plain functions of their arguments.
#ifndef GRADNORM_CLIENT_PYTHON_DLPACK_H_
#define GRADNORM_CLIENT_PYTHON_DLPACK_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace python_internal {

// DLDeviceType values gradnorm understands (the enum has more).
enum : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,  // pinned host memory, readable by the CPU
};

// DLDataTypeCode values gradnorm understands.
enum : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
};

struct DLDevice {
  int32_t device_type;  // a DLDeviceType
  int32_t device_id;    // CUDA ordinal; 0 for host memory
};

struct DLDataType {
  uint8_t code;    // a DLDataTypeCode
  uint8_t bits;    // bits per lane: 16, 32, 64
  uint16_t lanes;  // 1 for scalar element types
};

struct DLTensor {
  void* data;              // base pointer; elements start at data + byte_offset
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;          // ndim extents
  int64_t* strides;        // ndim strides in elements; null means row-major compact
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);  // may be null
};

// The capsule names of the protocol.
inline constexpr char kDLTensorCapsuleName[] = "dltensor";
inline constexpr char kUsedDLTensorCapsuleName[] = "used_dltensor";

// A view of `tensor`'s elements. INVALID_ARGUMENT, with a message naming what
// was found and what is expected, when the dtype is not float32, bfloat16,
// float16 or float64 with one lane; the device is not CPU (or pinned host) or
// CUDA; a dimension is negative; or the elements are not contiguous (row-major;
// extents of 1 may have any stride). tp_replicated is false.
absl::StatusOr<GradTensor> GradTensorFromDLTensor(const DLTensor& tensor);

}  // namespace python_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_PYTHON_DLPACK_H_
