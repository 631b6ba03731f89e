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

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/grad_tensor.h"

namespace gradnorm {
namespace python_internal {

// True when `object` is exactly a torch.Tensor or torch.nn.Parameter. Tensor
// subclasses (DTensor, __torch_function__ wrappers) are not plain: their
// Python accessors may mean something else than their C++ tensor. False when
// torch is not imported.
bool IsPlainTorchTensor(PyObject* object);

// Reads the view of plain tensor `tensor` (IsPlainTorchTensor). A
// non-contiguous tensor sets *contiguous = false and leaves `view` untouched.
// INVALID_ARGUMENT when its dtype is not float32, bfloat16, float16 or float64
// (the message names it as torch does, e.g. "torch.int64"), its layout is not
// strided, or its device is neither CPU nor CUDA; `index` prefixes the
// message ("tensor 3 has ...").
absl::Status ReadTorchView(PyObject* tensor, size_t index, GradTensor* view,
                           bool* contiguous);

// The gradients of plain parameters held as C++ tensor references, which keep
// their memory valid with no Python object per gradient: autograd's gradients
// have none until Python reads `.grad`, and making one (and dropping it again)
// costs more than reading the view.
//
//   TorchGrads grads;
//   for (PyObject* p : parameters) {
//     if (grads.Add(p) == TorchGrads::Added::kNotPlain) ...general path...
//   }
//   grads.ReadView(0, &view, &contiguous);
//
// Destroy or Clear() it with the GIL held. Not thread-safe.
class TorchGrads {
 public:
  enum class Added { kNoGradient, kAdded, kNotPlain };

  TorchGrads();
  ~TorchGrads();
  TorchGrads(const TorchGrads&) = delete;
  TorchGrads& operator=(const TorchGrads&) = delete;

  // Appends the `.grad` of `parameter`. kNoGradient (nothing appended) when
  // it has none; kNotPlain (nothing appended) when `parameter` or its gradient
  // is not a plain torch.Tensor / torch.nn.Parameter (a DTensor or another
  // subclass, whose accessors may mean something else).
  Added Add(PyObject* parameter);

  // Add()s parameters[0], ..., parameters[n - 1] in order and reads the view
  // of each gradient added (ReadView's contract): contiguous ones are appended
  // to `views`, the others' gradient indices to `noncontiguous`. False at the
  // first kNotPlain parameter (the gradients before it stay added); an error
  // from ReadView. Much faster than Add() and ReadView() for each when the
  // parameters' objects are not in cache (see the .cc).
  absl::StatusOr<bool> AddAllAndReadViews(PyObject* const* parameters,
                                          size_t n,
                                          std::vector<GradTensor>* views,
                                          std::vector<int64_t>* noncontiguous);

  size_t size() const;

  // Reads the view of gradient `i`, with ReadTorchView's contract.
  absl::Status ReadView(size_t i, GradTensor* view, bool* contiguous) const;

  // Gradient `i` as a Python tensor (a new reference; torch makes the object
  // if the gradient has none yet).
  PyObject* Wrap(size_t i) const;

  void Clear();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace python_internal
}  // namespace gradnorm

#endif  // GRADNORM_CLIENT_PYTHON_TORCH_TENSOR_H_
