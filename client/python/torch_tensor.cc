#include "client/python/torch_tensor.h"

#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/autograd/variable.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gradnorm {
namespace python_internal {
namespace {

// `torch.<dtype>` as Python prints it (the message torch users know); only on
// the error path.
std::string PythonRepr(PyObject* tensor, const char* attribute) {
  PyObject* value = PyObject_GetAttrString(tensor, attribute);
  PyObject* text = value == nullptr ? nullptr : PyObject_Str(value);
  std::string out = "?";
  if (text != nullptr) {
    const char* utf8 = PyUnicode_AsUTF8(text);
    if (utf8 != nullptr) out = utf8;
  }
  Py_XDECREF(text);
  Py_XDECREF(value);
  PyErr_Clear();
  return out;
}

// `tensor`'s attribute as Python prints it, for error messages.
std::string TensorRepr(const at::Tensor& tensor, const char* attribute) {
  PyObject* object = THPVariable_Wrap(tensor);
  if (object == nullptr) {
    PyErr_Clear();
    return "?";
  }
  std::string out = PythonRepr(object, attribute);
  Py_DECREF(object);
  return out;
}

absl::Status ReadView(const at::Tensor& t, size_t index, GradTensor* view,
                      bool* contiguous) {
  DType dtype;
  switch (t.scalar_type()) {
    case at::kFloat:
      dtype = DType::kFloat32;
      break;
    case at::kBFloat16:
      dtype = DType::kBFloat16;
      break;
    case at::kHalf:
      dtype = DType::kFloat16;
      break;
    case at::kDouble:
      dtype = DType::kFloat64;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor ", index, " has dtype ", TensorRepr(t, "dtype"),
          "; expected float32, bfloat16, float16 or float64"));
  }
  if (t.layout() != at::kStrided) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " has layout ", TensorRepr(t, "layout"),
        "; expected a dense (torch.strided) tensor"));
  }
  Device device;
  if (t.is_cpu()) {
    device = Device::Cpu();
  } else if (t.is_cuda()) {
    device = Device::Cuda(static_cast<int32_t>(t.get_device()));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " is on device ", TensorRepr(t, "device"),
        "; expected a CPU or CUDA tensor"));
  }
  *contiguous = t.is_contiguous();
  if (!*contiguous) return absl::OkStatus();
  view->dtype = dtype;
  view->device = device;
  view->numel = t.numel();
  view->data = view->numel == 0 ? nullptr : t.data_ptr();
  return absl::OkStatus();
}

// ReadView, with torch's exceptions as statuses: tensors without storage
// (functional or nested ones) throw from data_ptr.
absl::Status ReadViewOrStatus(const at::Tensor& t, size_t index,
                              GradTensor* view, bool* contiguous) {
  try {
    return ReadView(t, index, view, contiguous);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " cannot be viewed: ", e.what_without_backtrace()));
  }
}

}  // namespace

bool IsPlainTorchTensor(PyObject* object) {
  return THPVariableClass != nullptr && THPVariable_CheckExact(object);
}

absl::Status ReadTorchView(PyObject* tensor, size_t index, GradTensor* view,
                           bool* contiguous) {
  return ReadViewOrStatus(THPVariable_Unpack(tensor), index, view, contiguous);
}

struct TorchGrads::Impl {
  std::vector<at::Tensor> grads;
};

TorchGrads::TorchGrads() : impl_(std::make_unique<Impl>()) {}
TorchGrads::~TorchGrads() = default;

TorchGrads::Added TorchGrads::Add(PyObject* parameter) {
  if (!IsPlainTorchTensor(parameter)) return Added::kNotPlain;
  const at::Tensor& grad = THPVariable_Unpack(parameter).grad();
  if (!grad.defined()) return Added::kNoGradient;
  // A gradient assigned from Python keeps its Python object; a subclass
  // object (DTensor) or a Python-dispatched wrapper is not plain. Gradients
  // made by autograd usually have no Python object at all.
  c10::optional<PyObject*> object =
      grad.unsafeGetTensorImpl()->check_pyobj(getPyInterpreter());
  if (object.has_value() && *object != nullptr &&
      !THPVariable_CheckExact(*object)) {
    return Added::kNotPlain;
  }
  if (grad.key_set().has(c10::DispatchKey::Python)) return Added::kNotPlain;
  impl_->grads.push_back(grad);
  return Added::kAdded;
}

namespace {

// Prefetches the lines of `object` into L2 (prefetcht2). Into L1 they would
// queue behind its few miss buffers: a parameter's objects span about fifteen
// lines, and this was measured 40% slower.
template <typename T>
void PrefetchObject(const T* object, size_t bytes = sizeof(T)) {
  const uintptr_t begin = reinterpret_cast<uintptr_t>(object);
  for (uintptr_t line = begin & ~uintptr_t{63}; line < begin + bytes;
       line += 64) {
    __builtin_prefetch(reinterpret_cast<const void*>(line), /*rw=*/0,
                       /*locality=*/1);
  }
}

}  // namespace

// Reading a gradient's view walks five objects in turn (the parameter's
// PyObject and TensorImpl, its AutogradMeta, the gradient's TensorImpl and
// StorageImpl), and Add() takes a reference, an atomic read-modify-write that
// stops later loads from overtaking it. When the objects are not in cache
// (after a backward pass or an optimizer step over a large model) each
// parameter then costs five memory latencies in series: 10,000 parameters
// took over 2 ms. This loop is software-pipelined instead: stage s prefetches
// one object of the parameter kAhead * s places back, using only the pointers
// the earlier stages brought in, so about kAhead parameters' misses are in
// flight at each level, and Add() and ReadView() run on cached objects. The
// stages only read (they have no effect but warming the cache); Add() and
// ReadView() decide everything.
absl::StatusOr<bool> TorchGrads::AddAllAndReadViews(
    PyObject* const* parameters, size_t n, std::vector<GradTensor>* views,
    std::vector<int64_t>* noncontiguous) {
  constexpr size_t kAhead = 8;
  constexpr size_t kStages = 5;
  // What a stage found for parameter j, in slot j % kRing, is read kAhead
  // iterations later by the next stage.
  constexpr size_t kRing = 2 * kAhead;
  std::array<const c10::TensorImpl*, kRing> impl{};
  std::array<const c10::AutogradMetaInterface*, kRing> meta{};
  std::array<const c10::TensorImpl*, kRing> grad{};
  c10::impl::PyInterpreter* interpreter = getPyInterpreter();
  for (size_t i = 0; i < n + kStages * kAhead; ++i) {
    if (i < n) PrefetchObject(parameters[i], sizeof(THPVariable));
    if (i >= kAhead && i - kAhead < n) {
      const size_t j = i - kAhead;
      const c10::TensorImpl*& out = impl[j % kRing];
      out = nullptr;
      if (IsPlainTorchTensor(parameters[j])) {
        out = THPVariable_Unpack(parameters[j]).unsafeGetTensorImpl();
        PrefetchObject(out);
      }
    }
    if (i >= 2 * kAhead && i - 2 * kAhead < n) {
      const size_t j = i - 2 * kAhead;
      const c10::AutogradMetaInterface*& out = meta[j % kRing];
      out = nullptr;
      if (impl[j % kRing] != nullptr) {
        out = impl[j % kRing]->autograd_meta();
        // Only its size is taken from the derived type; nothing is read.
        if (out != nullptr) {
          PrefetchObject(
              static_cast<const torch::autograd::AutogradMeta*>(out));
        }
      }
    }
    if (i >= 3 * kAhead && i - 3 * kAhead < n) {
      const size_t j = i - 3 * kAhead;
      const c10::TensorImpl*& out = grad[j % kRing];
      out = nullptr;
      if (meta[j % kRing] != nullptr) {
        const at::Tensor& g = meta[j % kRing]->grad();
        if (g.defined()) {
          out = g.unsafeGetTensorImpl();
          PrefetchObject(out);
        }
      }
    }
    if (i >= 4 * kAhead && i - 4 * kAhead < n) {
      const c10::TensorImpl* g = grad[(i - 4 * kAhead) % kRing];
      if (g != nullptr) {
        const c10::StorageImpl* storage =
            g->unsafe_storage().unsafeGetStorageImpl();
        if (storage != nullptr) PrefetchObject(storage);
        c10::optional<PyObject*> object = g->check_pyobj(interpreter);
        if (object.has_value() && *object != nullptr) {
          PrefetchObject(*object, sizeof(PyObject));
        }
      }
    }
    if (i >= kStages * kAhead) {
      const Added added = Add(parameters[i - kStages * kAhead]);
      if (added == Added::kNotPlain) return false;
      if (added == Added::kAdded) {
        const size_t k = impl_->grads.size() - 1;
        GradTensor view;
        bool contiguous = false;
        absl::Status status = ReadView(k, &view, &contiguous);
        if (!status.ok()) return status;
        if (contiguous) {
          views->push_back(view);
        } else {
          noncontiguous->push_back(static_cast<int64_t>(k));
        }
      }
    }
  }
  return true;
}

size_t TorchGrads::size() const { return impl_->grads.size(); }

absl::Status TorchGrads::ReadView(size_t i, GradTensor* view,
                                  bool* contiguous) const {
  return ReadViewOrStatus(impl_->grads[i], i, view, contiguous);
}

PyObject* TorchGrads::Wrap(size_t i) const {
  return THPVariable_Wrap(impl_->grads[i]);
}

void TorchGrads::Clear() { impl_->grads.clear(); }

}  // namespace python_internal
}  // namespace gradnorm
