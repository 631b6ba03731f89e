#include "client/python/py_communicator.h"

#include <pybind11/stl.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace py = pybind11;

namespace gradnorm {
namespace python_internal {
namespace {

absl::Status FromPythonError(absl::string_view call, py::error_already_set& e) {
  return absl::UnavailableError(
      absl::StrCat("Python communicator ", call, " failed: ", e.what()));
}

absl::Status CopyBack(absl::string_view call, const py::object& result,
                      absl::Span<double> values) {
  std::vector<double> out = result.cast<std::vector<double>>();
  if (out.size() != values.size()) {
    return absl::InternalError(absl::StrCat(
        "Python communicator ", call, " returned ", out.size(),
        " values; expected ", values.size()));
  }
  std::copy(out.begin(), out.end(), values.begin());
  return absl::OkStatus();
}

}  // namespace

PyCommunicator::PyCommunicator(py::object impl)
    : impl_(std::move(impl)),
      rank_(impl_.attr("rank")().cast<int>()),
      size_(impl_.attr("size")().cast<int>()) {}

PyCommunicator::~PyCommunicator() {
  py::gil_scoped_acquire gil;
  impl_ = py::object();
}

absl::Status PyCommunicator::AllReduce(absl::Span<double> values, ReduceOp op) {
  py::gil_scoped_acquire gil;
  try {
    std::vector<double> in(values.begin(), values.end());
    py::object result = impl_.attr("all_reduce")(
        in, std::string(ReduceOpName(op)));
    return CopyBack("all_reduce", result, values);
  } catch (py::error_already_set& e) {
    return FromPythonError("all_reduce", e);
  }
}

absl::Status PyCommunicator::Broadcast(absl::Span<double> values, int root) {
  py::gil_scoped_acquire gil;
  try {
    std::vector<double> in(values.begin(), values.end());
    py::object result = impl_.attr("broadcast")(in, root);
    return CopyBack("broadcast", result, values);
  } catch (py::error_already_set& e) {
    return FromPythonError("broadcast", e);
  }
}

absl::Status PyCommunicator::BroadcastBytes(std::string* bytes, int root) {
  py::gil_scoped_acquire gil;
  try {
    py::object result =
        impl_.attr("broadcast_bytes")(py::bytes(*bytes), root);
    *bytes = result.cast<std::string>();
    return absl::OkStatus();
  } catch (py::error_already_set& e) {
    return FromPythonError("broadcast_bytes", e);
  }
}

absl::Status PyCommunicator::Barrier() {
  py::gil_scoped_acquire gil;
  try {
    impl_.attr("barrier")();
    return absl::OkStatus();
  } catch (py::error_already_set& e) {
    return FromPythonError("barrier", e);
  }
}

}  // namespace python_internal
}  // namespace gradnorm
