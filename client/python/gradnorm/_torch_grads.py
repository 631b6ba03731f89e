"""The gradients gradnorm.torch hands to libgradnorm: each one's address,
size, dtype and device read from its public attributes into the views of
gradnorm._tensors, with the arguments checked on the way; and the OpenMP
runtime the CPU kernels share with torch."""

import ctypes
import os
import re
from array import array
from typing import Iterable, List, Optional, Sequence, Union

import torch

from gradnorm import _lib
from gradnorm._tensors import (BFLOAT16, DEVICE_CPU, DEVICE_OTHER, FLOAT16,
                               FLOAT32, FLOAT64, SHARDED, TP_REPLICATED,
                               TensorList, exec_options)
from gradnorm._torch_dtensor import (_dtensor_replication, _is_dtensor,
                                     _is_marked_tp_replicated, _mesh_ranks,
                                     _partial_problem)


_DTYPE_CODES = {
    torch.float32: FLOAT32,
    torch.bfloat16: BFLOAT16,
    torch.float16: FLOAT16,
    torch.float64: FLOAT64,
}

_TensorOrTensors = Union[torch.Tensor, Iterable[torch.Tensor]]

_Tensor = torch.Tensor


def _torch_openmp_runtime() -> Optional[str]:
    """The OpenMP runtime torch's intra-op threads belong to, as loaded in
    this process (Debian's libgomp, pip torch's bundled copy, libiomp5 or
    libomp), or None when torch runs without OpenMP."""
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return None
    runtimes = sorted(p for p in paths if re.search(
        r"/lib(gomp|iomp5|omp)[-.][^/]*so", p))
    if not runtimes:
        return None
    # Several (torch's own copy and the system's): torch's is the one whose
    # threads it uses.
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    for path in runtimes:
        if path.startswith(torch_dir):
            return path
    return runtimes[0]


def _join_torch_threads() -> Optional[str]:
    """Has libgradnorm run its CPU work on torch's OpenMP threads, which
    would otherwise still spin on the cores after each torch operation
    while gradnorm's own threads want them. Returns the runtime's path, or
    None (gradnorm's own threads) when there is none or it cannot be used."""
    runtime = _torch_openmp_runtime()
    if runtime is None or _lib.lib.gn_use_openmp(runtime.encode()) != 0:
        return None
    return runtime


#: The OpenMP runtime (torch's) the CPU kernels run on, or None when they
#: run on gradnorm's own threads.
openmp_runtime = _join_torch_threads()


def _as_list(parameters: _TensorOrTensors) -> Sequence:
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, (list, tuple)):
        return parameters
    return list(parameters)


def _norm_type(norm_type) -> float:
    try:
        return float(norm_type)
    except (TypeError, ValueError):
        raise _lib.error(_lib.INVALID_ARGUMENT, (
            f"norm_type {norm_type!r} is not a number; expected p > 0 or "
            "'inf'")) from None


def _number(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _lib.error(_lib.INVALID_ARGUMENT, (
            f"{what} {value!r} is not a number")) from None


def _check_dtype(dtype):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise _lib.error(_lib.INVALID_ARGUMENT, (
            f"dtype {dtype!r} is not a floating-point torch dtype; gradnorm "
            "accumulates in float64 whatever it says"))


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill [data_ptr, data_ptr + numel) exactly, in
    some order (a permutation of a contiguous layout)."""
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda x: x[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def _problem(grads: List[torch.Tensor], dtype_codes: array,
             device_codes: Optional[array]) -> Optional[str]:
    """What makes some gradient unreadable, or None."""
    for i, g in enumerate(grads):
        try:
            if g.layout != torch.strided:
                return (f"gradient {i} has layout {g.layout}; expected a dense "
                        "(torch.strided) tensor")
            if dtype_codes[i] < 0:
                return (f"gradient {i} has dtype {g.dtype}; expected "
                        "torch.float32, bfloat16, float16 or float64")
            if device_codes is not None and device_codes[i] == DEVICE_OTHER:
                return (f"gradient {i} is on device {g.device}; expected a cpu "
                        "or cuda tensor")
            if not g.is_contiguous() and not _dense(g):
                return (f"gradient {i} has strides {tuple(g.stride())} for "
                        f"shape {tuple(g.shape)}, which do not cover its "
                        "elements densely; expected a contiguous (or "
                        "permuted-contiguous) gradient")
        except Exception as e:  # noqa: BLE001 (any unreadable tensor)
            return (f"gradient {i} ({type(g).__name__}) cannot be read: "
                    f"{type(e).__name__}: {e}")
    return None


def _views(items: Sequence, of_parameters: bool,
           replication: Optional[array] = None,
           error: Optional[str] = None) -> Optional[TensorList]:
    """Views of the gradients of `items` (parameters whose ``.grad`` is
    read, skipping None, or the gradient tensors themselves). Each
    gradient's attributes are read together in one pass, while its objects
    are in the cache: with thousands of gradients that pass is the host's
    main cost, so it is kept as short as the public attributes allow. A
    problem with some gradient goes into the views' error, for the library
    to report after the group's reductions. None when some parameter's
    gradient is not a plain torch.Tensor (the caller takes the general
    path)."""
    grads = []
    data, numel, dtype, device = array("Q"), array("q"), array("i"), array("i")
    add_grad, add_data, add_numel = grads.append, data.append, numel.append
    add_dtype, add_device = dtype.append, device.append
    code_of = _DTYPE_CODES.get
    problem = False
    for item in items:
        if of_parameters:
            g = item.grad
            if g is None:
                continue
            if type(g) is not _Tensor:
                return None
        else:
            g = item
        add_grad(g)
        try:
            pointer = g.data_ptr()
            count = g.numel()
            code = code_of(g.dtype, -1)
            where = (DEVICE_CPU if g.is_cpu else
                     g.get_device() if g.is_cuda else DEVICE_OTHER)
            if not g.is_contiguous():
                problem = True
        except Exception:  # noqa: BLE001 (sparse, mkldnn, ...: _problem says)
            pointer, count, code, where, problem = 0, 0, -1, DEVICE_CPU, True
        add_data(pointer)
        add_numel(count)
        add_dtype(code)
        add_device(where)
        if where == DEVICE_OTHER:
            problem = True
    if error is None and (problem or -1 in dtype):
        error = _problem(grads, dtype, device)
    return TensorList(grads, data, numel, dtype, device, replication, error)


class _Local:
    """One rank's gradients for one call: the views, and where and how the
    kernels run (torch's intra-op thread count; torch's current stream of
    the gradients' CUDA device)."""

    __slots__ = ("views", "first", "options")

    def __init__(self, views: TensorList):
        self.views = views
        grads = views.objects
        self.first = grads[0] if grads else None
        stream = 0
        if self.first is not None and self.first.is_cuda:
            stream = torch.cuda.current_stream(self.first.device).cuda_stream
        self.options = exec_options(torch.get_num_threads(), stream)

    @property
    def stream(self):
        return self.options.cuda_stream

    def options_ref(self):
        return ctypes.byref(self.options)


def _grads(parameters: Sequence, dp_cp_group, tp_group, for_norm: bool,
           one_process: bool = False) -> _Local:
    """The gradients of `parameters` with how each is counted."""
    if tp_group is None:
        views = _views(parameters, of_parameters=True)
        if views is not None:
            return _Local(views)
    local, replication, error = [], array("B"), None
    for parameter in parameters:
        grad = parameter.grad
        if grad is None:
            continue
        if _is_dtensor(grad):
            if one_process and _mesh_ranks(grad) > 1:
                i = len(local)
                raise _lib.error(_lib.INVALID_ARGUMENT, (
                    f"gradient {i} is a DTensor over a mesh of "
                    f"{_mesh_ranks(grad)} ranks, and clip_grad_norm_ takes the "
                    "norm on one process; expected gradients held whole here. "
                    "For sharded gradients use get_grad_norm(parameters, "
                    "dp_cp_group, tp_group) with clip_grad_by_total_norm_, or "
                    "Clipper"))
            if for_norm and error is None:
                # Not raised here: a rank without this gradient (unused, or
                # another expert's) is already in the reductions.
                error = _partial_problem(grad)
            replication.append(_dtensor_replication(grad, dp_cp_group,
                                                    tp_group))
            local.append(grad.to_local())
        else:
            replication.append(
                TP_REPLICATED if tp_group is not None and
                _is_marked_tp_replicated(parameter) else SHARDED)
            local.append(grad)
    return _Local(_views(local, of_parameters=False, replication=replication,
                         error=error))
