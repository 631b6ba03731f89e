// Gradient views of torch tensors read straight from their C++ tensors
// (libtorch's THPVariable), with no Python call per tensor. Reading dtype,
// contiguity, numel, data_ptr and device through Python accessors costs about
// 250 ns per tensor, more than the norm of a small gradient; from C++ it is a
// few loads.
//
//   if (IsPlainTorchTensor(object)) {
//     GradTensor view;
//     bool contiguous;
//     absl::Status status = ReadTorchView(object, &view, &contiguous);
//   }
//
// torch must be imported before any of these is called (the tensor type
// objects come from it). This header does not pull in the torch headers; only
// torch_tensor.cc compiles against them. Thread-safety: callers hold the GIL.
#ifndef GRADNORM_CLIENT_PYTHON_TORCH_TENSOR_H_
#define GRADNORM_CLIENT_PYTHON_TORCH_TENSOR_H_

#include <Python.h>

#include "absl/status/status.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace python_internal {

// True when `object` is exactly a torch.Tensor or torch.nn.Parameter. Tensor
// subclasses (DTensor, __torch_function__ wrappers) are not plain: their
// Python accessors may mean something else than their C++ tensor. False when
// torch is not imported.
bool IsPlainTorchTensor(PyObject* object);

// The `.grad` of plain tensor `parameter` (IsPlainTorchTensor) as a new
// reference, or nullptr when it has none. Reads the C++ tensor's gradient and
// returns its Python object (the one `parameter.grad` returns).
PyObject* PlainTorchGrad(PyObject* parameter);

// Reads the view of plain tensor `tensor` (IsPlainTorchTensor). A
// non-contiguous tensor sets *contiguous = false and leaves `view` untouched.
// INVALID_ARGUMENT when its dtype is not float32, bfloat16, float16 or float64
// (the message names it as torch does, e.g. "torch.int64"), its layout is not
// strided, or its device is neither CPU nor CUDA; `index` prefixes the
// message ("tensor 3 has ...").
absl::Status ReadTorchView(PyObject* tensor, size_t index, GradTensor* view,
                           bool* contiguous);

}  // namespace python_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_PYTHON_TORCH_TENSOR_H_
