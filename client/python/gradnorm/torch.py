"""gradnorm for PyTorch trainers: NeMo Automodel's ``get_grad_norm`` and
``clip_grad_by_total_norm_`` with DESIGN.md section 2 semantics, and a drop-in
``clip_grad_norm_``.

    import gradnorm.torch as gn

    total = gn.get_grad_norm(model.parameters(), dp_cp_group, tp_group,
                             norm_type=2)
    gn.clip_grad_by_total_norm_(model.parameters(), max_grad_norm=1.0,
                                total_norm=total)

Semantics (the same as gradnorm's C++ client):
- Each rank's partial ``S = sum |g|^p`` (``max |g|`` for p = inf) is computed
  by gradnorm's kernels over all its gradient tensors in one pass, every
  element widened to fp64. Tensors cross zero-copy.
- The partial is all-reduced as fp64 over ``dp_cp_group`` and then
  ``tp_group`` through ``torch.distributed`` (SUM, or MAX where NaN wins over
  everything). ``None`` for a group means no reduction over it. Every rank
  joins every reduction, also with no gradients.
- DTensor gradients contribute their local shard. A gradient replicated over
  a mesh dimension whose group is ``tp_group`` or ``dp_cp_group`` (placement
  ``Replicate``) is counted once: on coordinate 0 of that dimension. Plain
  tensors replicated across TP ranks (layer norms, biases) are marked with
  :func:`mark_tp_replicated` (or Megatron's ``tensor_model_parallel = False``)
  and counted on TP rank 0 only.
- The seed's ``dtype`` argument is the minimum accumulation precision; gradnorm
  always accumulates in fp64.
- A NaN or Inf gradient makes the total NaN (NaN wins) or Inf; clipping then
  changes nothing. Clipping scales by ``max_norm / (total + 1e-6)`` when that is
  < 1, in each gradient's own storage and dtype (bf16 gradients really are
  scaled).

Errors: ValueError for norm_type <= 0 or NaN, max_norm < 0 or NaN, a
negative total_norm, or a gradient gradnorm cannot view (integer dtype, an
unsupported device, tensors on several devices).
"""

import math
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist

from gradnorm import _gradnorm

__all__ = [
    "get_grad_norm",
    "clip_grad_by_total_norm_",
    "clip_grad_norm_",
    "mark_tp_replicated",
]

_CLIP_EPSILON = 1e-6

_DTYPE_CODES = {
    torch.float32: int(_gradnorm.DType.float32),
    torch.bfloat16: int(_gradnorm.DType.bfloat16),
    torch.float16: int(_gradnorm.DType.float16),
    torch.float64: int(_gradnorm.DType.float64),
}

_TensorOrTensors = Union[torch.Tensor, Iterable[torch.Tensor]]


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


def _check_not_partial(grad):
    """Raises for a DTensor gradient with a Partial placement: its local
    values still wait to be summed over that mesh dimension, so no norm can be
    taken from them (scaling them, a linear map, is fine)."""
    for dim, placement in enumerate(grad.placements):
        is_partial = getattr(placement, "is_partial", None)
        if callable(is_partial) and is_partial():
            raise ValueError(
                f"INVALID_ARGUMENT: a DTensor gradient is Partial over mesh "
                f"dimension {dim}: its local values are not yet summed, so "
                "their norm is not the gradient's; expected Shard or Replicate "
                "placements (redistribute the gradient first)")


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
    """How many ranks DTensor `grad`'s mesh spans (1: its local shard is the
    whole gradient)."""
    mesh = grad.device_mesh
    ranks = 1
    for dim in range(len(grad.placements)):
        group = mesh.get_group(dim)
        if group is not None:
            ranks *= dist.get_world_size(group)
    return ranks


def _check_one_process(parameters: Sequence):
    """Raises for a DTensor gradient spread over several ranks: a norm of this
    process's shards alone is not the gradient's norm."""
    for i, parameter in enumerate(parameters):
        grad = parameter.grad
        if grad is not None and _is_dtensor(grad):
            ranks = _mesh_ranks(grad)
            if ranks > 1:
                raise ValueError(
                    f"INVALID_ARGUMENT: parameter {i}'s gradient is a DTensor "
                    f"over a mesh of {ranks} ranks, and clip_grad_norm_ takes "
                    "the norm on one process; expected gradients held whole "
                    "here. For sharded gradients use get_grad_norm(parameters, "
                    "dp_cp_group, tp_group) with clip_grad_by_total_norm_, or "
                    "Clipper")


def _as_list(parameters: _TensorOrTensors) -> Sequence:
    """The parameters as a sequence that is only read. A list or tuple is used
    as it is: copying one touches every parameter object, which after a
    backward pass costs about 10 ns each."""
    if isinstance(parameters, torch.Tensor):
        return [parameters]
    if isinstance(parameters, (list, tuple)):
        return parameters
    return list(parameters)


def _norm_type(norm_type) -> float:
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(
            f"INVALID_ARGUMENT: norm_type {norm_type!r} is not a number; "
            "expected p > 0 or 'inf'") from None
    if not p > 0:  # also NaN
        raise ValueError(
            f"INVALID_ARGUMENT: norm_type {p} is not supported; expected p > 0 "
            "(or inf)")
    return p


def _check_dtype(dtype):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(
            f"INVALID_ARGUMENT: dtype {dtype!r} is not a floating-point torch "
            "dtype; gradnorm accumulates in float64 whatever it says")


def _check_max_norm(max_norm) -> float:
    value = float(max_norm)
    if not value >= 0:
        raise ValueError(
            f"INVALID_ARGUMENT: max norm {value} is not supported; expected a "
            "max norm >= 0")
    return value


def _combine(a: float, b: float, p: float) -> float:
    if math.isinf(p):
        if math.isnan(a) or math.isnan(b):
            return math.nan
        return max(a, b)
    return a + b


class _LocalGrads:
    """Zero-copy kernel views of one rank's gradient tensors."""

    def __init__(self, views):
        self.views = views
        self.num_grads = views.num_grads
        self.first = views.grad(0) if self.num_grads else None
        # Non-contiguous gradients (rare: parameters created as views) are read
        # through contiguous copies and scaled by torch.
        self.strided = [views.grad(i) for i in views.noncontiguous]
        self.copies = (
            _gradnorm.TensorViews.from_torch(
                [g.contiguous() for g in self.strided], _DTYPE_CODES)
            if self.strided else None)
        self.stream = 0
        if self.first is not None and self.first.is_cuda:
            self.stream = torch.cuda.current_stream(self.first.device).cuda_stream

    @classmethod
    def of_tensors(cls, grads: List[torch.Tensor]) -> "_LocalGrads":
        return cls(_gradnorm.TensorViews.from_torch(grads, _DTYPE_CODES))

    @classmethod
    def of_parameters(cls, parameters: list) -> Optional["_LocalGrads"]:
        """The gradients of plain-tensor parameters; None when some parameter
        or gradient is a DTensor (the caller takes the general path)."""
        views = _gradnorm.TensorViews.from_parameters(parameters)
        if views is None:
            return None
        return cls(views)

    def partial(self, p: float) -> float:
        threads = torch.get_num_threads()
        value, _ = self.views.partial_norm(p, threads, self.stream)
        if self.copies is not None:
            extra, _ = self.copies.partial_norm(p, threads, self.stream)
            value = _combine(value, extra, p)
        return value

    def scale_(self, coef: float):
        self.views.scale_(coef, torch.get_num_threads(), self.stream)
        for g in self.strided:
            g.mul_(coef)

    def done(self):
        """Drops the gradient references."""
        self.views.release()


def _local_grad(parameter, for_norm: bool) -> Optional[torch.Tensor]:
    grad = parameter.grad
    if grad is None:
        return None
    if _is_dtensor(grad):
        if for_norm:
            _check_not_partial(grad)
        return grad.to_local()
    return grad


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


def _reduced_replicate_dims(grad, dp_cp_group, tp_group) -> List[int]:
    """The mesh dimensions of DTensor `grad` over which it is replicated and
    whose ranks all lie in tp_group or dp_cp_group: the reduction over that
    group would add up every replica. That includes a part of it, as HSDP's
    replicate dimension is of the flattened dp_cp group: its replicas are
    summed there just the same."""
    mesh = grad.device_mesh
    dims = []
    for dim, placement in enumerate(grad.placements):
        if not _is_replicate(placement):
            continue
        group = mesh.get_group(dim)
        if _within_group(group, tp_group) or _within_group(group, dp_cp_group):
            dims.append(dim)
    return dims


def _counted_here(grad, parameter, dp_cp_group, tp_group) -> bool:
    """False for a replica this rank must not count (another rank counts it).
    Raises for a Partial DTensor gradient (every rank alike)."""
    if _is_dtensor(grad):
        _check_not_partial(grad)
        dims = _reduced_replicate_dims(grad, dp_cp_group, tp_group)
        coordinate = grad.device_mesh.get_coordinate() if dims else None
        return coordinate is None or all(coordinate[d] == 0 for d in dims)
    if tp_group is not None and _is_marked_tp_replicated(parameter):
        return dist.get_rank(group=tp_group) == 0
    return True


def _reduce(partial: float, p: float, group, device) -> float:
    if group is None:
        return partial
    if math.isinf(p):
        # MAX drops NaN on some backends (comparisons with NaN are false), so a
        # NaN travels as a flag in the same fp64 tensor.
        is_nan = math.isnan(partial)
        t = torch.tensor([0.0 if is_nan else partial, 1.0 if is_nan else 0.0],
                         dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
        value, nan_flag = t.tolist()
        return math.nan if nan_flag > 0 else value
    t = torch.tensor([partial], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.item()


def _reduction_device(group) -> torch.device:
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _total_from_partial(partial: float, p: float) -> float:
    if math.isinf(p) or math.isnan(partial) or partial == 0:
        return partial
    if p == 2.0:
        return math.sqrt(partial)
    if p == 1.0:
        return partial
    return partial ** (1.0 / p)


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
    parameters = _as_list(parameters)
    # Without a TP group no plain tensor is a replica to skip.
    local = (_LocalGrads.of_parameters(parameters)
             if tp_group is None else None)
    if local is None:
        grads = []
        for parameter in parameters:
            grad = parameter.grad
            if grad is None:
                continue
            if _counted_here(grad, parameter, dp_cp_group, tp_group):
                grads.append(grad.to_local() if _is_dtensor(grad) else grad)
        local = _LocalGrads.of_tensors(grads)
    try:
        partial = local.partial(p)
    finally:
        local.done()
    for group in (dp_cp_group, tp_group):
        if group is not None:
            partial = _reduce(partial, p, group, _reduction_device(group))
    return _total_from_partial(partial, p)


def _local_grads_of(parameters: list, for_norm: bool,
                    one_process: bool = False) -> _LocalGrads:
    local = _LocalGrads.of_parameters(parameters)
    if local is None:
        # Only the general path can meet DTensors.
        if one_process:
            _check_one_process(parameters)
        local = _LocalGrads.of_tensors([
            g for g in (_local_grad(q, for_norm) for q in parameters)
            if g is not None])
    return local


def clip_grad_by_total_norm_(parameters: _TensorOrTensors,
                             max_grad_norm: Union[int, float],
                             total_norm: float,
                             dtype: torch.dtype = torch.float32) -> None:
    """Scales the gradients in place by max_grad_norm / (total_norm + 1e-6)
    when total_norm is finite and that factor is < 1; otherwise changes
    nothing. DTensor gradients are scaled through their local shard. dtype is
    accepted for the seed's signature: the multiply is done in fp32 or better
    and stored in each gradient's own dtype."""
    max_norm = _check_max_norm(max_grad_norm)
    _check_dtype(dtype)
    total = float(total_norm)
    if total < 0:
        raise ValueError(
            f"INVALID_ARGUMENT: total norm {total} is negative; expected a norm "
            ">= 0 (or NaN/inf, which clip nothing)")
    if not math.isfinite(total) or max_norm / (total + _CLIP_EPSILON) >= 1.0:
        return
    local = _local_grads_of(_as_list(parameters), for_norm=False)
    try:
        local.scale_(max_norm / (total + _CLIP_EPSILON))
    finally:
        local.done()


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
    A DTensor gradient over several ranks is a ValueError: its norm needs the
    other ranks (use get_grad_norm and clip_grad_by_total_norm_, or Clipper).
    """
    p = _norm_type(norm_type)
    max_norm = _check_max_norm(max_norm)
    local = _local_grads_of(_as_list(parameters), for_norm=True,
                            one_process=True)
    try:
        return _clip_local(local, p, max_norm, error_if_nonfinite)
    finally:
        local.done()


def _clip_local(local: _LocalGrads, p: float, max_norm: float,
                error_if_nonfinite: bool) -> torch.Tensor:
    if local.num_grads == 0:
        return torch.tensor(0.0)
    total = _total_from_partial(local.partial(p), p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {p} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. With "
            "`error_if_nonfinite=False` gradnorm returns the norm and leaves "
            "the gradients unchanged")
    if math.isfinite(total):
        coef = max_norm / (total + _CLIP_EPSILON)
        if coef < 1.0:
            local.scale_(coef)
    first = local.first
    out_dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    return torch.tensor(total, dtype=out_dtype, device=first.device)


class _GroupCommunicator:
    """gradnorm's Communicator contract over a torch.distributed group (the
    C++ clipper calls it through PyCommunicator)."""

    def __init__(self, group):
        self.group = group
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if dist.get_backend(group) == "nccl" else torch.device("cpu"))

    def rank(self):
        return dist.get_rank(group=self.group)

    def size(self):
        return dist.get_world_size(group=self.group)

    def _global(self, root):
        get = getattr(dist, "get_global_rank", None) or \
            dist.distributed_c10d._get_global_rank
        return get(self.group, root)

    def all_reduce(self, values, op):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if op == "sum":
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
            return t.tolist()
        nan = torch.isnan(t)  # MAX with NaN winning, as CombineValues does
        both = torch.cat([torch.where(nan, torch.full_like(t, -math.inf), t),
                          nan.double()])
        dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)
        n = len(values)
        return [math.nan if flag > 0 else v
                for v, flag in zip(both[:n].tolist(), both[n:].tolist())]

    def broadcast(self, values, root):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=self._global(root), group=self.group)
        return t.tolist()

    def broadcast_bytes(self, data, root):
        box = [data]
        dist.broadcast_object_list(box, src=self._global(root), group=self.group)
        return box[0]

    def barrier(self):
        dist.barrier(group=self.group)


class Clipper:
    """gradnorm's C++ GradNormClipper for a PyTorch job: each step computes the
    job's gradient norm (reduced over dp_cp_group then tp_group), and either
    decides locally (no coordinator) or has the job's leader (rank 0 of
    job_group) report the job's partial to the coordinator, which combines the
    jobs of the run and returns one decision to all. Gradients are clipped in
    place unless the action is SKIP.

        clipper = gn.Clipper(norm_type=2, max_norm=1.0,
                             dp_cp_group=dp, tp_group=tp, job_group=None,
                             address="coordinator:7443", run_id="run7",
                             participant=job_index, participants=num_jobs,
                             security="tls", root_certs_pem=ca, token=token)
        result = clipper.step(step, model.parameters())
        if result["action"] != "ACTION_SKIP":
            optimizer.step()

    Groups are torch.distributed process groups or None (one process).
    job_group defaults to the default (world) group when torch.distributed is
    initialized. Without address the clipper decides locally with max_norm.
    Without participants the run must already be registered (with this
    norm_type). While job_group's leader waits for the other jobs it tells the
    job's ranks so every progress_interval_s: keep it well below job_group's
    timeout.
    step() returns a dict: total_norm, clip_coef, action ("ACTION_NONE",
    "ACTION_CLIP", "ACTION_SKIP"), reason, reason_detail, effective_max_norm,
    nonfinite, job_partial. Errors: ValueError for bad arguments, RuntimeError
    (prefixed by the status code) for communicator and coordinator errors.
    """

    def __init__(self, *, norm_type=2.0, max_norm=1.0, dp_cp_group=None,
                 tp_group=None, job_group="world", address=None, run_id=None,
                 participant=0, participants=None, round_timeout_ms=60000,
                 security="insecure", root_certs_pem="", client_cert_pem="",
                 client_key_pem="", tls_server_name="", token="",
                 report_timeout_s=120.0, progress_interval_s=10.0,
                 error_if_nonfinite=False):
        p = _norm_type(norm_type)
        max_norm = _check_max_norm(max_norm)
        if job_group == "world":
            job_group = (dist.group.WORLD
                         if dist.is_available() and dist.is_initialized() else None)
        self._dp_cp_group, self._tp_group = dp_cp_group, tp_group
        coordinator = None
        if address is not None:
            coordinator = dict(
                address=address, run_id=run_id or "", participant=participant,
                participants=participants, round_timeout_ms=round_timeout_ms,
                security=security, root_certs_pem=root_certs_pem,
                client_cert_pem=client_cert_pem, client_key_pem=client_key_pem,
                tls_server_name=tls_server_name, token=token,
                report_timeout_s=report_timeout_s,
                progress_interval_s=progress_interval_s)
        comm = lambda g: None if g is None else _GroupCommunicator(g)  # noqa: E731
        self._clipper = _gradnorm.Clipper(
            comm(dp_cp_group), comm(tp_group), comm(job_group), p, max_norm,
            bool(error_if_nonfinite), coordinator)

    def step(self, step: int, parameters: _TensorOrTensors) -> dict:
        grads, replicated = [], []
        for parameter in _as_list(parameters):
            grad = parameter.grad
            if grad is None:
                continue
            if _is_dtensor(grad):
                # Raised on every rank alike (placements are the same on all),
                # so no rank enters a reduction that another has left.
                _check_not_partial(grad)
                if _reduced_replicate_dims(grad, self._dp_cp_group,
                                           self._tp_group):
                    raise ValueError(
                        "INVALID_ARGUMENT: Clipper does not support DTensor "
                        "gradients replicated over a reduced mesh dimension "
                        "yet; use get_grad_norm and clip_grad_by_total_norm_")
                grad = grad.to_local()
                replicated.append(False)
            else:
                replicated.append(_is_marked_tp_replicated(parameter))
            grads.append(grad)
        local = _LocalGrads.of_tensors(grads)
        if local.strided:
            raise ValueError(
                "INVALID_ARGUMENT: Clipper needs contiguous gradients; "
                f"{len(local.strided)} are not")
        try:
            # On torch's current stream, as get_grad_norm and the clip
            # functions run: ordered after backward's writes and before the
            # optimizer's reads on that stream.
            result = self._clipper.step(step, local.views, replicated,
                                        local.stream)
        finally:
            local.done()
        return result
