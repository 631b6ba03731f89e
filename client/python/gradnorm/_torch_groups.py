"""torch.distributed groups as gradnorm communicators: fp64 values
all-reduced and broadcast on the group's device, one Communicator per group
(kept for the process's life), and the collective every rank joins."""

from typing import Optional

import torch
import torch.distributed as dist

from gradnorm import _lib
from gradnorm._communicator import Communicator


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
