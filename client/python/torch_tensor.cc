#include "client/python/torch_tensor.h"

#include <torch/csrc/autograd/python_variable.h>

#include <string>

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

}  // namespace

bool IsPlainTorchTensor(PyObject* object) {
  return THPVariableClass != nullptr && THPVariable_CheckExact(object);
}

PyObject* PlainTorchGrad(PyObject* parameter) {
  const at::Tensor& grad = THPVariable_Unpack(parameter).grad();
  if (!grad.defined()) return nullptr;
  // Returns the gradient's existing Python object when it has one.
  return THPVariable_Wrap(grad);
}

namespace {

absl::Status ReadView(PyObject* tensor, size_t index, GradTensor* view,
                      bool* contiguous) {
  const at::Tensor& t = THPVariable_Unpack(tensor);
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
          "tensor ", index, " has dtype ", PythonRepr(tensor, "dtype"),
          "; expected float32, bfloat16, float16 or float64"));
  }
  if (t.layout() != at::kStrided) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " has layout ", PythonRepr(tensor, "layout"),
        "; expected a dense (torch.strided) tensor"));
  }
  Device device;
  if (t.is_cpu()) {
    device = Device::Cpu();
  } else if (t.is_cuda()) {
    device = Device::Cuda(static_cast<int32_t>(t.get_device()));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " is on device ", PythonRepr(tensor, "device"),
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

}  // namespace

absl::Status ReadTorchView(PyObject* tensor, size_t index, GradTensor* view,
                           bool* contiguous) {
  // Tensors without storage (functional or nested ones) throw from data_ptr.
  try {
    return ReadView(tensor, index, view, contiguous);
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", index, " cannot be viewed: ", e.what_without_backtrace()));
  }
}

}  // namespace python_internal
}  // namespace gradnorm
