#include "client/python/torch_tensor.h"

#include <torch/csrc/autograd/python_variable.h>

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
