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
from typing import Iterable, Optional, Union

import torch
import torch.distributed as dist

from gradnorm import _lib
from gradnorm._torch_dtensor import mark_tp_replicated
from gradnorm._torch_grads import (_as_list, _check_dtype, _grads, _norm_type,
                                   _number)
# The OpenMP runtime (torch's) the CPU kernels run on, or None when they run
# on gradnorm's own threads: gradnorm.torch.openmp_runtime.
from gradnorm._torch_grads import openmp_runtime  # noqa: F401
from gradnorm._torch_groups import _collective, _communicator, _handle
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

_TensorOrTensors = Union[torch.Tensor, Iterable[torch.Tensor]]


def get_grad_norm(parameters: _TensorOrTensors, dp_cp_group, tp_group,
                  norm_type: Union[int, float, str] = 2,
                  dtype: torch.dtype = torch.float32, *,
                  exact: bool = False) -> float:
    """The norm of all gradients of the dp_cp x tp group viewed as one vector.

    parameters: a tensor or tensors (or DTensors) whose ``.grad`` are this
    rank's gradient shards; those without a gradient are skipped. dp_cp_group,
    tp_group: torch.distributed process groups, or None for no reduction.
    norm_type: p > 0, or inf / 'inf'. dtype: minimum accumulation precision
    (gradnorm uses fp64). Every rank of both groups must call it. Returns the
    total norm as a float (NaN or inf when a gradient is non-finite).

    exact=True (p = 1 or 2; CPU or CUDA gradients): every |g| or g^2 is summed with no
    rounding, over the whole group too, and rounded once at the end, so the
    norm is the same bits however the gradients are sharded over DP and TP,
    on any number of threads: run a few steps with two layouts and compare.
    """
    p = _norm_type(norm_type)
    _check_dtype(dtype)
    local = _grads(_as_list(parameters), dp_cp_group, tp_group, for_norm=True)
    local.options.exact = int(bool(exact))
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
    exact=True (p = 1 or 2) sends the job's exact partial
    (see get_grad_norm); when every job of the run does, the coordinator's
    total is the same bits for any job split. A run registered without
    inexact=True (RunConfig) requires them, and the clipper then sends them
    whatever exact says.
    step() returns a dict: total_norm, clip_coef, action ("ACTION_NONE",
    "ACTION_CLIP", "ACTION_SKIP"), reason, reason_detail, effective_max_norm,
    nonfinite, job_partial, slowest_participant, arrival_spread_seconds,
    exact (True when total_norm is the exact total, rounded once).
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
                 error_if_nonfinite=False, exact=False):
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
            error_if_nonfinite)), torch.get_num_threads(), int(bool(exact)))
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
            "exact": bool(result.exact),
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
