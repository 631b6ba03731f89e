// The `gradnorm._gradnorm` extension module: a thin pybind11 binding of the
// kernels (ComputePartialNorm, ScaleInPlace) over tensors that cross from
// Python without a copy. The Python package (gradnorm/torch.py) builds the
// distributed semantics on top; this file only moves views and statuses.
//
//   views = _gradnorm.TensorViews.from_dlpack([numpy_array, torch_tensor])
//   value, nonfinite = views.partial_norm(2.0)
//   views.scale_(0.5)
//
// Two ways in, both zero-copy:
// - from_dlpack: any DLPack producer (numpy, torch, cupy, jax ...) or a raw
//   "dltensor" capsule. The capsules are consumed per the protocol (renamed
//   "used_dltensor") and their deleters run when the TensorViews is released.
// - from_torch / from_parameters: torch tensors read from their C++ tensors
//   (torch_tensor.h; subclasses through their Python accessors). Exporting a
//   DLPack capsule costs about a microsecond per tensor in torch, more than
//   the whole norm of a small tensor; trainers with ten thousand gradients pay
//   that every step. The tensors are kept referenced by the TensorViews, so
//   the memory stays valid. Their CPU kernels (and the Clipper's) run on
//   torch's intra-op threads (TorchParallelFor), not on a second pool that
//   would compete with torch's spinning OpenMP workers for the cores.
//
// Errors: INVALID_ARGUMENT becomes ValueError, every other code RuntimeError,
// the message prefixed with the code name.
#include <Python.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/coordinator_client.h"
#include "client/grad_norm_clipper.h"
#include "client/python/dlpack.h"
#include "client/python/py_communicator.h"
#include "client/python/torch_parallel_for.h"
#include "client/python/torch_tensor.h"
#include "client/single_process_communicator.h"
#include "kernels/grad_tensor.h"
#include "kernels/partial_norm.h"

namespace py = pybind11;

namespace gradnorm {
namespace python_internal {
namespace {

[[noreturn]] void ThrowStatus(const absl::Status& status) {
  std::string message =
      absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                   status.message());
  if (status.code() == absl::StatusCode::kInvalidArgument) {
    throw py::value_error(message);
  }
  throw std::runtime_error(message);
}

// Calls `obj.name()` through the vectorcall fast path; throws on a Python error.
py::object CallMethod(PyObject* obj, PyObject* name) {
  PyObject* result = PyObject_CallMethodNoArgs(obj, name);
  if (result == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}

py::object GetAttr(PyObject* obj, PyObject* name) {
  PyObject* result = PyObject_GetAttr(obj, name);
  if (result == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}

// Interned attribute names, created once.
struct Names {
  PyObject* dlpack = PyUnicode_InternFromString("__dlpack__");
  PyObject* data_ptr = PyUnicode_InternFromString("data_ptr");
  PyObject* numel = PyUnicode_InternFromString("numel");
  PyObject* dtype = PyUnicode_InternFromString("dtype");
  PyObject* is_contiguous = PyUnicode_InternFromString("is_contiguous");
  PyObject* is_cuda = PyUnicode_InternFromString("is_cuda");
  PyObject* get_device = PyUnicode_InternFromString("get_device");
  PyObject* device = PyUnicode_InternFromString("device");
  PyObject* type = PyUnicode_InternFromString("type");
};

const Names& GetNames() {
  static const Names* names = new Names();
  return *names;
}

// A list of gradient views with whatever keeps their memory alive.
class TensorViews {
 public:
  TensorViews() = default;
  TensorViews(const TensorViews&) = delete;
  TensorViews& operator=(const TensorViews&) = delete;
  ~TensorViews() { Release(); }

  // Objects with __dlpack__ (called with no stream argument) or "dltensor"
  // capsules.
  static std::unique_ptr<TensorViews> FromDLPack(const py::sequence& objects) {
    auto views = std::make_unique<TensorViews>();
    const Names& names = GetNames();
    views->views_.reserve(objects.size());
    views->managed_.reserve(objects.size());
    for (size_t i = 0; i < objects.size(); ++i) {
      py::object object = objects[i];
      py::object capsule = object;
      if (!PyCapsule_CheckExact(object.ptr())) {
        capsule = CallMethod(object.ptr(), names.dlpack);
      }
      if (!PyCapsule_IsValid(capsule.ptr(), kDLTensorCapsuleName)) {
        throw py::value_error(absl::StrCat(
            "INVALID_ARGUMENT: tensor ", i,
            " is neither an unused \"dltensor\" capsule nor an object whose "
            "__dlpack__() returns one"));
      }
      auto* managed = static_cast<DLManagedTensor*>(
          PyCapsule_GetPointer(capsule.ptr(), kDLTensorCapsuleName));
      if (managed == nullptr) throw py::error_already_set();
      // From here the capsule is ours: renaming it stops its destructor from
      // freeing the tensor, and Release() calls the deleter instead.
      if (PyCapsule_SetName(capsule.ptr(), kUsedDLTensorCapsuleName) != 0) {
        throw py::error_already_set();
      }
      views->managed_.push_back(managed);
      absl::StatusOr<GradTensor> view =
          GradTensorFromDLTensor(managed->dl_tensor);
      if (!view.ok()) {
        ThrowStatus(absl::Status(
            view.status().code(),
            absl::StrCat("tensor ", i, ": ", view.status().message())));
      }
      views->views_.push_back(*view);
    }
    return views;
  }

  // Reads a torch tensor's view; returns false (view untouched) when it is not
  // contiguous. Throws ValueError for a dtype gradnorm cannot read. Plain
  // tensors are read from their C++ tensor; subclasses through their Python
  // accessors, which may be overridden.
  static bool ReadTorchView(PyObject* t, const py::dict& dtype_codes,
                            size_t index, GradTensor* view) {
    if (IsPlainTorchTensor(t)) {
      bool contiguous = false;
      absl::Status status =
          python_internal::ReadTorchView(t, index, view, &contiguous);
      if (!status.ok()) ThrowStatus(status);
      return contiguous;
    }
    const Names& names = GetNames();
    py::object dtype = GetAttr(t, names.dtype);
    PyObject* code = PyDict_GetItem(dtype_codes.ptr(), dtype.ptr());
    if (code == nullptr) {
      throw py::value_error(absl::StrCat(
          "INVALID_ARGUMENT: tensor ", index, " has dtype ",
          std::string(py::str(dtype)),
          "; expected float32, bfloat16, float16 or float64"));
    }
    if (CallMethod(t, names.is_contiguous).ptr() != Py_True) return false;
    view->dtype = static_cast<DType>(PyLong_AsLong(code));
    view->numel = PyLong_AsLongLong(CallMethod(t, names.numel).ptr());
    view->data = view->numel == 0
                     ? nullptr
                     : PyLong_AsVoidPtr(CallMethod(t, names.data_ptr).ptr());
    view->device = Device::Cpu();
    if (GetAttr(t, names.is_cuda).ptr() == Py_True) {
      view->device = Device::Cuda(static_cast<int32_t>(
          PyLong_AsLong(CallMethod(t, names.get_device).ptr())));
    } else {
      // Neither CUDA nor CPU memory (xpu, mps, meta, ...): the CPU kernels
      // must not read it.
      const std::string type = py::str(GetAttr(GetAttr(t, names.device).ptr(), names.type));
      if (type != "cpu") {
        throw py::value_error(absl::StrCat(
            "INVALID_ARGUMENT: tensor ", index, " is on device type '", type,
            "'; expected cpu or cuda"));
      }
    }
    if (PyErr_Occurred()) throw py::error_already_set();
    return true;
  }

  // torch.Tensor objects (no DLPack export). `dtype_codes` maps torch dtype
  // objects to DType values (for tensor subclasses). Non-contiguous tensors
  // are not viewed; their indices are listed in `noncontiguous` for the caller
  // to handle.
  static std::unique_ptr<TensorViews> FromTorch(const py::sequence& tensors,
                                                const py::dict& dtype_codes) {
    auto views = std::make_unique<TensorViews>();
    views->on_torch_threads_ = true;
    views->views_.reserve(tensors.size());
    // A list of our own: py::list(tensors) would share a list argument, which
    // the caller may change while the views point into its tensors.
    views->keep_alive_ = py::reinterpret_steal<py::list>(PySequence_List(tensors.ptr()));
    if (!views->keep_alive_) throw py::error_already_set();
    for (size_t i = 0; i < tensors.size(); ++i) {
      PyObject* t = PyList_GET_ITEM(views->keep_alive_.ptr(), i);
      GradTensor view;
      if (ReadTorchView(t, dtype_codes, i, &view)) {
        views->views_.push_back(view);
      } else {
        views->noncontiguous_.push_back(static_cast<int64_t>(i));
      }
    }
    return views;
  }

  // Views of the `.grad` of each parameter that has one, or None when a
  // parameter or gradient is not a plain torch.Tensor (a DTensor: the caller
  // takes the general path). Everything is read afresh from each gradient's
  // C++ tensor (a few loads), so reassigned, resized, moved or dropped
  // gradients need no invalidation; the gradients are held as C++ tensors.
  static py::object FromParameters(const py::iterable& parameters) {
    auto views = std::make_unique<TensorViews>();
    views->on_torch_threads_ = true;
    TorchGrads& grads = views->torch_grads_;
    // A list or tuple is read in place; any other iterable is listed first.
    py::object sequence = py::reinterpret_steal<py::object>(
        PySequence_Fast(parameters.ptr(), "parameters must be iterable"));
    if (!sequence) throw py::error_already_set();
    const size_t n =
        static_cast<size_t>(PySequence_Fast_GET_SIZE(sequence.ptr()));
    views->views_.reserve(n);
    absl::StatusOr<bool> all_plain = grads.AddAllAndReadViews(
        PySequence_Fast_ITEMS(sequence.ptr()), n, &views->views_,
        &views->noncontiguous_);
    if (!all_plain.ok()) ThrowStatus(all_plain.status());
    if (!*all_plain) return py::none();
    return py::cast(std::move(views));
  }

  // (value, nonfinite): sum |g|^p, or max |g| for p = inf.
  std::pair<double, bool> PartialNorm(double p, int num_threads,
                                      uintptr_t cuda_stream) const {
    CheckNotReleased();
    PartialNormOptions options;
    options.num_threads = num_threads;
    if (on_torch_threads_) options.parallel_for = TorchParallelFor;
    options.cuda_stream = reinterpret_cast<void*>(cuda_stream);
    absl::StatusOr<gradnorm::PartialNorm> partial;
    {
      py::gil_scoped_release release;
      partial = ComputePartialNorm(views_, p, options);
    }
    if (!partial.ok()) ThrowStatus(partial.status());
    return {partial->value, partial->nonfinite};
  }

  void Scale(double coef, int num_threads, uintptr_t cuda_stream) const {
    CheckNotReleased();
    ScaleOptions options;
    options.num_threads = num_threads;
    if (on_torch_threads_) options.parallel_for = TorchParallelFor;
    options.cuda_stream = reinterpret_cast<void*>(cuda_stream);
    absl::Status status;
    {
      py::gil_scoped_release release;
      status = ScaleInPlace(views_, coef, options);
    }
    if (!status.ok()) ThrowStatus(status);
  }

  // Runs the DLPack deleters and drops the torch references; the views are
  // unusable afterwards. Idempotent.
  void Release() {
    for (DLManagedTensor* managed : managed_) {
      if (managed->deleter != nullptr) managed->deleter(managed);
    }
    managed_.clear();
    keep_alive_ = py::list();
    torch_grads_.Clear();
    views_.clear();
    released_ = true;
  }

  size_t size() const { return views_.size(); }
  const std::vector<int64_t>& noncontiguous() const { return noncontiguous_; }
  // The torch tensors viewed, contiguous or not.
  size_t num_grads() const {
    return torch_grads_.size() > 0 ? torch_grads_.size() : keep_alive_.size();
  }
  py::object grad(size_t i) const {
    CheckNotReleased();
    if (i >= num_grads()) throw py::index_error("gradient index out of range");
    if (torch_grads_.size() > 0) {
      PyObject* object = torch_grads_.Wrap(i);
      if (object == nullptr) throw py::error_already_set();
      return py::reinterpret_steal<py::object>(object);
    }
    return keep_alive_[i];
  }
  std::vector<GradTensor>& views() { return views_; }

 private:
  void CheckNotReleased() const {
    if (released_) {
      throw std::runtime_error(
          "FAILED_PRECONDITION: TensorViews used after release()");
    }
  }

  std::vector<GradTensor> views_;
  std::vector<DLManagedTensor*> managed_;
  py::list keep_alive_;     // the torch tensors viewed (from_torch)
  TorchGrads torch_grads_;  // the gradients viewed (from_parameters)
  std::vector<int64_t> noncontiguous_;
  // Views of torch tensors run the CPU kernels on torch's intra-op threads
  // (TorchParallelFor), not beside them on gradnorm's pool.
  bool on_torch_threads_ = false;
  bool released_ = false;
};

std::unique_ptr<Communicator> MakeCommunicator(const py::object& impl) {
  if (impl.is_none()) return std::make_unique<SingleProcessCommunicator>();
  return std::make_unique<PyCommunicator>(impl);
}

template <typename T>
T Get(const py::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<T>();
}

// GradNormClipper over Python communicators and, optionally, a coordinator.
class Clipper {
 public:
  // `coordinator`: None, or a dict with address, run_id, participant and
  // optionally participants (then the run is registered with norm_type,
  // max_norm and round_timeout_ms), security ("insecure", "tls", "mtls"),
  // root_certs_pem, client_cert_pem, client_key_pem, tls_server_name, token,
  // report_timeout_s, progress_interval_s.
  static std::unique_ptr<Clipper> Create(py::object dp_cp, py::object tp,
                                         py::object job, double norm_type,
                                         double max_norm,
                                         bool error_if_nonfinite,
                                         py::object coordinator) {
    auto clipper = std::unique_ptr<Clipper>(new Clipper());
    clipper->dp_cp_ = MakeCommunicator(dp_cp);
    clipper->tp_ = MakeCommunicator(tp);
    clipper->job_ = MakeCommunicator(job);
    GradNormClipperOptions options;
    options.norm_type = norm_type;
    options.max_norm = max_norm;
    options.error_if_nonfinite = error_if_nonfinite;
    // Only gradnorm.torch makes a Clipper: run the kernels on torch's threads.
    options.partial.parallel_for = TorchParallelFor;
    options.scale.parallel_for = TorchParallelFor;
    std::optional<CoordinatorBinding> binding;
    if (!coordinator.is_none()) {
      py::dict c = coordinator.cast<py::dict>();
      CoordinatorClientOptions client_options;
      client_options.target = Get<std::string>(c, "address", "");
      std::string security = Get<std::string>(c, "security", "insecure");
      if (security == "tls") {
        client_options.security = CoordinatorClientOptions::Security::kTls;
      } else if (security == "mtls") {
        client_options.security =
            CoordinatorClientOptions::Security::kMutualTls;
      } else if (security != "insecure") {
        throw py::value_error(absl::StrCat(
            "INVALID_ARGUMENT: security \"", security,
            "\" is not supported; expected \"insecure\", \"tls\" or \"mtls\""));
      }
      client_options.root_certs_pem = Get<std::string>(c, "root_certs_pem", "");
      client_options.client_cert_pem =
          Get<std::string>(c, "client_cert_pem", "");
      client_options.client_key_pem = Get<std::string>(c, "client_key_pem", "");
      client_options.tls_server_name =
          Get<std::string>(c, "tls_server_name", "");
      client_options.bearer_token = Get<std::string>(c, "token", "");
      absl::StatusOr<std::unique_ptr<CoordinatorClient>> client =
          CoordinatorClient::Create(client_options);
      if (!client.ok()) ThrowStatus(client.status());
      binding.emplace();
      binding->client = std::move(*client);
      binding->run_id = Get<std::string>(c, "run_id", "");
      binding->participant = Get<uint32_t>(c, "participant", 0);
      binding->report_timeout =
          absl::Seconds(Get<double>(c, "report_timeout_s", 120.0));
      binding->progress_interval =
          absl::Seconds(Get<double>(c, "progress_interval_s", 10.0));
      uint32_t participants = Get<uint32_t>(c, "participants", 0);
      if (participants > 0) {
        gradnorm::v1::RunConfig config;
        config.set_norm_type(norm_type);
        config.set_max_norm(max_norm);
        config.set_participants(participants);
        config.set_round_timeout_ms(
            Get<uint64_t>(c, "round_timeout_ms", 60000));
        binding->config = config;
      }
    }
    absl::StatusOr<std::unique_ptr<GradNormClipper>> created;
    {
      py::gil_scoped_release release;
      created = GradNormClipper::Create(clipper->dp_cp_.get(),
                                        clipper->tp_.get(), clipper->job_.get(),
                                        options, std::move(binding));
    }
    if (!created.ok()) ThrowStatus(created.status());
    clipper->clipper_ = std::move(*created);
    return clipper;
  }

  // `cuda_stream`: torch's current stream of the gradients' device (0 for
  // CPU gradients or the legacy default stream).
  py::dict Step(uint64_t step, TensorViews& views,
                const std::vector<bool>& tp_replicated, uintptr_t cuda_stream) {
    std::vector<GradTensor>& grads = views.views();
    if (tp_replicated.size() != grads.size()) {
      throw py::value_error(absl::StrCat(
          "INVALID_ARGUMENT: ", tp_replicated.size(),
          " tp_replicated flags for ", grads.size(), " tensors"));
    }
    for (size_t i = 0; i < grads.size(); ++i) {
      grads[i].tp_replicated = tp_replicated[i];
    }
    absl::StatusOr<StepResult> result;
    {
      py::gil_scoped_release release;
      result = clipper_->Step(step, grads, reinterpret_cast<void*>(cuda_stream));
    }
    if (!result.ok()) ThrowStatus(result.status());
    py::dict out;
    out["total_norm"] = result->total_norm;
    out["clip_coef"] = result->clip_coef;
    out["action"] = gradnorm::v1::Action_Name(result->action);
    out["reason"] = gradnorm::v1::Reason_Name(result->reason);
    out["reason_detail"] = result->reason_detail;
    out["effective_max_norm"] = result->effective_max_norm;
    out["nonfinite"] = result->nonfinite;
    out["job_partial"] = result->job_partial;
    return out;
  }

  ~Clipper() {
    // The Python communicators take the GIL in their destructors.
    clipper_.reset();
  }

 private:
  Clipper() = default;
  std::unique_ptr<Communicator> dp_cp_, tp_, job_;
  std::unique_ptr<GradNormClipper> clipper_;
};

}  // namespace
}  // namespace python_internal
}  // namespace gradnorm

PYBIND11_MODULE(_gradnorm, m) {
  using ::gradnorm::DType;
  using ::gradnorm::python_internal::TensorViews;

  m.doc() =
      "gradnorm kernels over zero-copy tensor views (use gradnorm.torch for "
      "the trainer API)";

  py::enum_<DType>(m, "DType")
      .value("float32", DType::kFloat32)
      .value("bfloat16", DType::kBFloat16)
      .value("float16", DType::kFloat16)
      .value("float64", DType::kFloat64);

  py::class_<TensorViews>(m, "TensorViews")
      .def_static("from_dlpack", &TensorViews::FromDLPack, py::arg("tensors"),
                  "Views of DLPack producers or 'dltensor' capsules.")
      .def_static("from_torch", &TensorViews::FromTorch, py::arg("tensors"),
                  py::arg("dtype_codes"),
                  "Views of contiguous torch tensors; dtype_codes maps torch "
                  "dtypes to DType values.")
      .def("partial_norm", &TensorViews::PartialNorm, py::arg("p"),
           py::arg("num_threads") = 0, py::arg("cuda_stream") = 0,
           "(value, nonfinite): sum |g|^p, or max |g| for p = inf, in fp64.")
      .def("scale_", &TensorViews::Scale, py::arg("coef"),
           py::arg("num_threads") = 0, py::arg("cuda_stream") = 0,
           "Multiplies every element by coef in place, in its own dtype.")
      .def_static("from_parameters", &TensorViews::FromParameters,
                  py::arg("parameters"),
                  "Views of the .grad of each parameter that has one, or None "
                  "when a gradient is not a plain torch.Tensor.")
      .def("release", &TensorViews::Release)
      .def_property_readonly("num_grads", &TensorViews::num_grads,
                             "How many torch tensors were viewed (from_torch, "
                             "from_parameters), contiguous or not.")
      .def("grad", &TensorViews::grad, py::arg("i"),
           "The i-th torch tensor viewed (from_torch, from_parameters).")
      .def_property_readonly("noncontiguous", &TensorViews::noncontiguous)
      .def("__len__", &TensorViews::size);

  py::class_<::gradnorm::python_internal::Clipper>(m, "Clipper")
      .def(py::init(&::gradnorm::python_internal::Clipper::Create),
           py::arg("dp_cp"), py::arg("tp"), py::arg("job"),
           py::arg("norm_type"), py::arg("max_norm"),
           py::arg("error_if_nonfinite"), py::arg("coordinator"))
      .def("step", &::gradnorm::python_internal::Clipper::Step,
           py::arg("step"), py::arg("views"), py::arg("tp_replicated"),
           py::arg("cuda_stream") = 0);

  m.def(
      "partial_norm",
      [](const py::sequence& tensors, double p, int num_threads) {
        std::unique_ptr<TensorViews> views = TensorViews::FromDLPack(tensors);
        return views->PartialNorm(p, num_threads, 0);
      },
      py::arg("tensors"), py::arg("p"), py::arg("num_threads") = 0,
      "(value, nonfinite) of DLPack tensors: sum |g|^p, or max |g| for p = "
      "inf.");
  m.def(
      "scale_",
      [](const py::sequence& tensors, double coef, int num_threads) {
        std::unique_ptr<TensorViews> views = TensorViews::FromDLPack(tensors);
        views->Scale(coef, num_threads, 0);
      },
      py::arg("tensors"), py::arg("coef"), py::arg("num_threads") = 0,
      "Scales DLPack tensors in place by coef.");
}
