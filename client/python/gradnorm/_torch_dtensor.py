"""DTensor gradients and TP-replicated parameters, for gradnorm.torch: which
gradients a rank counts (a gradient replicated within a reduced group is
counted once, on coordinate 0 of its mesh dimension) and which it refuses
(Partial placements)."""

from typing import Optional

import torch
import torch.distributed as dist

from gradnorm._tensors import COUNTED_ELSEWHERE, SHARDED


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
