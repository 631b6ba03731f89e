"""gradnorm for PyTorch trainers: NeMo Automodel's ``get_grad_norm`` and
``clip_grad_by_total_norm_``, a drop-in ``clip_grad_norm_``, and ``Clipper``
for runs with a coordinator. Every one of them runs gradnorm's C++ library
(GetGradNorm, ClipGradByTotalNorm, GradNormClipper) through its C ABI, with
``torch.distributed`` groups as its communicators.

    import gradnorm.torch as gn

    total = gn.get_grad_norm(model.parameters(), dp_cp_group, tp_group,
                             norm_type=2)
    gn.clip_grad_by_total_norm_(model.parameters(), max_grad_norm=1.0,
                                total_norm=total)

Semantics:
- Each rank's partial ``S = sum |g|^p`` (``max |g|`` for p = inf) is computed
  over all its gradient tensors in one pass, every element widened to fp64,
  reading the tensors where they are (no copy); CUDA tensors on torch's
  current stream of their device.
- The partial is all-reduced as fp64 over ``dp_cp_group`` and then
  ``tp_group`` (SUM, or MAX where NaN wins). ``None`` for a group means no
  reduction over it. Every rank joins every reduction, also with no
  gradients and also when its own gradients are bad: then that rank raises
  the error and the others raise ABORTED, and none is left waiting.
- DTensor gradients contribute their local shard. A gradient replicated over
  a mesh dimension whose ranks lie within ``tp_group`` or ``dp_cp_group``
  (placement ``Replicate``, as HSDP's replicate dimension within the
  flattened dp_cp group) is counted once: on coordinate 0 of that dimension.
  Plain tensors replicated across TP ranks (layer norms, biases) are marked
  with :func:`mark_tp_replicated` (or Megatron's ``tensor_model_parallel =
  False``) and counted on TP rank 0 only. A Partial gradient is refused.
- The seed's ``dtype`` argument is the minimum accumulation precision;
  gradnorm always accumulates in fp64.
- A NaN or Inf gradient makes the total NaN (NaN wins) or Inf; clipping then
  changes nothing. Clipping scales by ``max_norm / (total + 1e-6)`` when that
  is < 1, in each gradient's own storage and dtype (bf16 gradients really are
  scaled).
- Gradients are read through their public attributes. A gradient whose
  elements are dense in memory (contiguous, or any permutation of it such as
  channels_last) is read in place; one that is not (a strided view) is an
  error.

Errors: gradnorm.Error ("CODE: message"), InvalidArgumentError (also a
ValueError) for bad arguments and gradients, e.g. norm_type <= 0, max_norm <
0, a negative total_norm, an integer or complex gradient, one on a device
that is neither cpu nor cuda, or gradients on several devices.
"""

import ctypes
import os
import re
from array import array
from typing import Iterable, List, Optional, Sequence, Union

import torch
import torch.distributed as dist

from gradnorm import _lib
from gradnorm._communicator import Communicator
from gradnorm._tensors import (BFLOAT16, COUNTED_ELSEWHERE, DEVICE_CPU,
                               DEVICE_OTHER, FLOAT16, FLOAT32, FLOAT64,
                               SHARDED, TP_REPLICATED, TensorList,
                               exec_options)
from gradnorm.config import (AutoClip, RunConfig, SpikeRule, StaticClip,
                             ZClip)
from gradnorm.coordinator import CoordinatorClient

__all__ = [
    "get_grad_norm",
    "clip_grad_by_total_norm_",
    "clip_grad_norm_",
    "mark_tp_replicated",
    "Clipper",
    "RunConfig",
    "StaticClip",
    "AutoClip",
    "ZClip",
    "SpikeRule",
]

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


def _dtensor_api():
    """(DTensor classes, Replicate classes) of this torch, possibly empty."""
    dtensors, replicates = [], []
    for module in ("torch.distributed.tensor", "torch.distributed._tensor"):
        try:
            mod = __import__(module, fromlist=["DTensor", "Replicate"])
        except ImportError:
            continue
        if hasattr(mod, "DTensor") and mod.DTensor not in dtensors:
            dtensors.append(mod.DTensor)
        if hasattr(mod, "Replicate") and mod.Replicate not in replicates:
            replicates.append(mod.Replicate)
    return tuple(dtensors), tuple(replicates)


_DTENSOR_TYPES, _REPLICATE_TYPES = _dtensor_api()


def _is_dtensor(t) -> bool:
    return isinstance(t, _DTENSOR_TYPES) if _DTENSOR_TYPES else False


def _is_replicate(placement) -> bool:
    if _REPLICATE_TYPES and isinstance(placement, _REPLICATE_TYPES):
        return True
    is_replicate = getattr(placement, "is_replicate", None)
    return bool(is_replicate()) if callable(is_replicate) else False


def _partial_problem(grad) -> Optional[str]:
    """Why a DTensor gradient with a Partial placement has no norm (its local
    values still wait to be summed over that mesh dimension), or None."""
    for dim, placement in enumerate(grad.placements):
        is_partial = getattr(placement, "is_partial", None)
        if callable(is_partial) and is_partial():
            return (f"a DTensor gradient is Partial over mesh dimension {dim}: "
                    "its local values are not yet summed, so their norm is not "
                    "the gradient's; expected Shard or Replicate placements "
                    "(redistribute the gradient first)")
    return None


def mark_tp_replicated(parameter: torch.Tensor, replicated: bool = True):
    """Marks a plain (non-DTensor) parameter as replicated across TP ranks:
    get_grad_norm counts its gradient on TP rank 0 only. Returns it."""
    parameter.gradnorm_tp_replicated = bool(replicated)
    return parameter


def _is_marked_tp_replicated(parameter) -> bool:
    if getattr(parameter, "gradnorm_tp_replicated", False):
        return True
    return getattr(parameter, "tensor_model_parallel", None) is False


def _mesh_ranks(grad) -> int:
    mesh = grad.device_mesh
    ranks = 1
    for dim in range(len(grad.placements)):
        group = mesh.get_group(dim)
        if group is not None:
            ranks *= dist.get_world_size(group)
    return ranks


def _within_group(group, reduced) -> bool:
    """Whether every rank of `group` is in `reduced` (the same on every rank)."""
    if group is None or reduced is None:
        return False
    if group is reduced:
        return True
    try:
        return set(dist.get_process_group_ranks(group)) <= set(
            dist.get_process_group_ranks(reduced))
    except (AttributeError, RuntimeError, ValueError):
        return False


def _dtensor_replication(grad, dp_cp_group, tp_group) -> int:
    """SHARDED, or COUNTED_ELSEWHERE for a replica whose reduction group would
    add up every copy and of which this rank is not coordinate 0."""
    mesh = grad.device_mesh
    dims = []
    for dim, placement in enumerate(grad.placements):
        if not _is_replicate(placement):
            continue
        group = mesh.get_group(dim)
        if _within_group(group, tp_group) or _within_group(group, dp_cp_group):
            dims.append(dim)
    if not dims:
        return SHARDED
    coordinate = mesh.get_coordinate()
    if coordinate is None or all(coordinate[d] == 0 for d in dims):
        return SHARDED
    return COUNTED_ELSEWHERE


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


class _TorchGroup:
    """The communicator interface of gradnorm._communicator over a
    torch.distributed group: fp64 values on the group's device (the current
    CUDA device for NCCL, else the CPU)."""

    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group=group)
        self.size = dist.get_world_size(group=group)
        self.nccl = dist.get_backend(group) == "nccl"

    def _device(self):
        if self.nccl:
            # A group bound to a device (init_process_group(device_id=...))
            # communicates there, whatever the current device is.
            bound = getattr(self.group, "bound_device_id", None)
            if bound is not None:
                return bound
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _global(self, root: int) -> int:
        get = getattr(dist, "get_global_rank", None) or \
            dist.distributed_c10d._get_global_rank
        return get(self.group, root)

    def all_reduce(self, values, op):
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum"
                        else dist.ReduceOp.MAX, group=self.group)
        return t.tolist()

    def broadcast(self, values, root):
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.broadcast(t, src=self._global(root), group=self.group)
        return t.tolist()

    def broadcast_bytes(self, data, root):
        t = torch.tensor(list(data), dtype=torch.uint8, device=self._device())
        dist.broadcast(t, src=self._global(root), group=self.group)
        return bytes(t.tolist())

    def barrier(self):
        dist.barrier(group=self.group)


# One gn_communicator per torch group, made on first use; groups live as
# long as the job, so the cache holds them. One whose callback failed is
# unusable and replaced on the next use (the torch group decides whether
# it still works).
_COMMUNICATORS = {}


def _communicator(group) -> Optional[Communicator]:
    if group is None:
        return None
    entry = _COMMUNICATORS.get(id(group))
    if entry is None or entry[0] is not group or entry[1].failed:
        entry = (group, Communicator(_TorchGroup(group)))
        _COMMUNICATORS[id(group)] = entry
    return entry[1]


def _handle(communicator: Optional[Communicator]):
    return None if communicator is None else communicator.handle


def _collective(code: int, *communicators):
    """Raises a KeyboardInterrupt a callback caught (Ctrl-C during a
    reduction) before the library's error, then the error."""
    for communicator in communicators:
        if communicator is not None:
            communicator.raise_interrupt()
    _lib.check(code)


def get_grad_norm(parameters: _TensorOrTensors, dp_cp_group, tp_group,
                  norm_type: Union[int, float, str] = 2,
                  dtype: torch.dtype = torch.float32) -> float:
    """The norm of all gradients of the dp_cp x tp group viewed as one vector.

    parameters: a tensor or tensors (or DTensors) whose ``.grad`` are this
    rank's gradient shards; those without a gradient are skipped. dp_cp_group,
    tp_group: torch.distributed process groups, or None for no reduction.
    norm_type: p > 0, or inf / 'inf'. dtype: minimum accumulation precision
    (gradnorm uses fp64). Every rank of both groups must call it. Returns the
    total norm as a float (NaN or inf when a gradient is non-finite).
    """
    p = _norm_type(norm_type)
    _check_dtype(dtype)
    local = _grads(_as_list(parameters), dp_cp_group, tp_group, for_norm=True)
    result = _lib.gn_grad_norm_result()
    dp_cp, tp = _communicator(dp_cp_group), _communicator(tp_group)
    _collective(_lib.lib.gn_get_grad_norm(
        local.views.ref(), _handle(dp_cp), _handle(tp), p, 0,
        local.options_ref(), ctypes.byref(result)), dp_cp, tp)
    return result.total_norm


def clip_grad_by_total_norm_(parameters: _TensorOrTensors,
                             max_grad_norm: Union[int, float],
                             total_norm: float,
                             dtype: torch.dtype = torch.float32) -> None:
    """Scales the gradients in place by max_grad_norm / (total_norm + 1e-6)
    when total_norm is finite and that factor is < 1; otherwise changes
    nothing. DTensor gradients are scaled through their local shard. dtype is
    accepted for the seed's signature: the multiply is done in fp32 or better
    and stored in each gradient's own dtype."""
    max_norm = _number(max_grad_norm, "max norm")
    total = _number(total_norm, "total norm")
    _check_dtype(dtype)
    local = _grads(_as_list(parameters), None, None, for_norm=False)
    result = _lib.gn_clip_result()
    _lib.check(_lib.lib.gn_clip_grad_by_total_norm(
        local.views.ref(), max_norm, total, 0, local.options_ref(),
        ctypes.byref(result)))


def clip_grad_norm_(parameters: _TensorOrTensors, max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach: Optional[bool] = None) -> torch.Tensor:
    """A drop-in for torch.nn.utils.clip_grad_norm_ on one process.

    Returns the total norm of the gradients as a scalar tensor on the first
    gradient's device (float64 for float64 gradients, else float32: never
    rounded to bf16/fp16). Differences from torch, both deliberate: the norm is
    accumulated in fp64, and a non-finite total leaves the gradients unchanged
    (torch multiplies them by NaN) unless error_if_nonfinite raises first.
    foreach is accepted and ignored (gradnorm always uses one fused pass).
    A DTensor gradient over several ranks is an InvalidArgumentError: its norm
    needs the other ranks (use get_grad_norm and clip_grad_by_total_norm_, or
    Clipper).
    """
    p = _norm_type(norm_type)
    max_norm = _number(max_norm, "max norm")
    local = _grads(_as_list(parameters), None, None, for_norm=True,
                   one_process=True)
    if local.first is None:
        return torch.tensor(0.0)
    norm = _lib.gn_grad_norm_result()
    _lib.check(_lib.lib.gn_get_grad_norm(
        local.views.ref(), None, None, p, 0, local.options_ref(),
        ctypes.byref(norm)))
    total = norm.total_norm
    if error_if_nonfinite and norm.nonfinite:
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. With "
            "`error_if_nonfinite=False` gradnorm returns the norm and leaves "
            "the gradients unchanged")
    clip = _lib.gn_clip_result()
    _lib.check(_lib.lib.gn_clip_grad_by_total_norm(
        local.views.ref(), max_norm, total, 0, local.options_ref(),
        ctypes.byref(clip)))
    first = local.first
    out_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    return torch.tensor(total, dtype=out_dtype, device=first.device)


_ACTIONS = {0: "ACTION_UNSPECIFIED", 1: "ACTION_NONE", 2: "ACTION_CLIP",
            3: "ACTION_SKIP"}
_REASONS = {0: "REASON_UNSPECIFIED", 1: "REASON_WITHIN_MAX_NORM",
            2: "REASON_ABOVE_MAX_NORM", 3: "REASON_NONFINITE",
            4: "REASON_SPIKE"}


class Clipper:
    """gradnorm's C++ GradNormClipper for a PyTorch job: each step computes the
    job's gradient norm (reduced over dp_cp_group then tp_group), and either
    decides locally (no coordinator) or has the job's leader (rank 0 of
    job_group) report the job's partial to the coordinator, which combines the
    jobs of the run and returns one decision to all. Gradients are clipped in
    place unless the action is SKIP.

        config = gn.RunConfig(participants=num_jobs, max_norm=1.0,
                              clip_policy=gn.ZClip(z_threshold=2.5),
                              spike_rule=gn.SpikeRule(sigma=6))
        clipper = gn.Clipper(norm_type=2, dp_cp_group=dp, tp_group=tp,
                             address="coordinator:7443", run_id="run7",
                             participant=job_index, config=config,
                             security="tls", root_certs_pem=ca, token=token)
        result = clipper.step(step, model.parameters())
        if result["action"] != "ACTION_SKIP":
            optimizer.step()

    Groups are torch.distributed process groups or None (one process).
    job_group defaults to the default (world) group when torch.distributed is
    initialized. Without address the clipper decides locally with max_norm.
    config (a gradnorm.config.RunConfig: every clip policy, the spike rule,
    the non-finite policy, the round timeout) registers the run; its
    norm_type must be the clipper's. participants= (with round_timeout_ms=)
    is a short form of a static config with max_norm. With neither, the run
    must already be registered (with this norm_type). While job_group's
    leader waits for the other jobs it tells the job's ranks so every
    progress_interval_s: keep it well below job_group's timeout.
    step() returns a dict: total_norm, clip_coef, action ("ACTION_NONE",
    "ACTION_CLIP", "ACTION_SKIP"), reason, reason_detail, effective_max_norm,
    nonfinite, job_partial, slowest_participant, arrival_spread_seconds.
    Errors: gradnorm.Error (InvalidArgumentError, a ValueError, for bad
    arguments), the same on every rank of the job; a rank whose own
    gradients are bad raises InvalidArgumentError and the others ABORTED.
    """

    _handle = None  # until __init__ creates the C++ clipper

    def __init__(self, *, norm_type=2.0, max_norm=1.0, dp_cp_group=None,
                 tp_group=None, job_group="world", address=None, run_id=None,
                 participant=0, config: Optional[RunConfig] = None,
                 participants=None, round_timeout_ms=None,
                 security="insecure", root_certs_pem="", client_cert_pem="",
                 client_key_pem="", tls_server_name="", token="",
                 report_timeout_s=120.0, progress_interval_s=10.0,
                 error_if_nonfinite=False):
        p = _norm_type(norm_type)
        max_norm = _number(max_norm, "max norm")
        if job_group == "world":
            job_group = (dist.group.WORLD
                         if dist.is_available() and dist.is_initialized() else None)
        self._dp_cp_group, self._tp_group = dp_cp_group, tp_group
        self._client = None
        binding = None
        if address is not None:
            if config is None and participants is not None:
                config = RunConfig(participants=participants, norm_type=p,
                                   max_norm=max_norm,
                                   round_timeout_ms=round_timeout_ms)
            # Only the job's leader talks to the coordinator: the other
            # ranks need no client (nor its certificates), and a failure
            # there would leave the leader waiting in Create's broadcast.
            leader = job_group is None or dist.get_rank(group=job_group) == 0
            if leader:
                self._client = CoordinatorClient(
                    address, security=security, root_certs_pem=root_certs_pem,
                    client_cert_pem=client_cert_pem,
                    client_key_pem=client_key_pem,
                    tls_server_name=tls_server_name, token=token)
            self._run_id = (run_id or "").encode()
            self._config_json = (None if config is None or not leader
                                 else config.to_json().encode())
            binding = _lib.gn_coordinator_binding(
                _handle(self._client), self._run_id, int(participant),
                self._config_json, float(report_timeout_s),
                float(progress_interval_s))
        # Kept referenced: the C++ clipper uses them until it is destroyed
        # (also when the cache replaces a communicator after a failure).
        self._groups = (dp_cp_group, tp_group, job_group)
        self._communicators = tuple(map(_communicator, self._groups))
        options = _lib.gn_clipper_options(p, max_norm, int(bool(
            error_if_nonfinite)), torch.get_num_threads())
        self._handle = ctypes.c_void_p()
        _collective(_lib.lib.gn_clipper_create(
            *map(_handle, self._communicators), ctypes.byref(options),
            None if binding is None else ctypes.byref(binding),
            ctypes.byref(self._handle)), *self._communicators)

    def step(self, step: int, parameters: _TensorOrTensors) -> dict:
        local = _grads(_as_list(parameters), self._dp_cp_group,
                       self._tp_group, for_norm=True)
        result = _lib.gn_step_result()
        # On torch's current stream: ordered after backward's writes and
        # before the optimizer's reads on that stream.
        _collective(_lib.lib.gn_clipper_step(
            self._handle, int(step), local.views.ref(), local.stream,
            ctypes.byref(result)), *self._communicators)
        return {
            "total_norm": result.total_norm,
            "clip_coef": result.clip_coef,
            "action": _ACTIONS.get(result.action, str(result.action)),
            "reason": _REASONS.get(result.reason, str(result.reason)),
            "reason_detail": (result.reason_detail or b"").decode(),
            "effective_max_norm": result.effective_max_norm,
            "nonfinite": bool(result.nonfinite),
            "job_partial": result.job_partial,
            "slowest_participant": result.slowest_participant,
            "arrival_spread_seconds": result.arrival_spread_seconds,
        }

    def finish(self) -> Optional[dict]:
        """Tells the coordinator the run is over, after the last step: it
        opens no new rounds and watches of it end. Only the job's leader
        calls it (others return None); every job may, any number of times.
        Without a coordinator: None."""
        if self._client is None:
            return None
        return self._client.finish_run(self._run_id.decode())

    def close(self):
        """Destroys the C++ clipper (also at garbage collection)."""
        if self._handle:
            _lib.lib.gn_clipper_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    def __del__(self):
        self.close()
