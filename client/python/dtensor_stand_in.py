"""A stand-in for torch's DTensor, for tests of gradnorm.torch's DTensor path.

Debian's torch is 1.13, which has no DTensor (no torch.distributed.tensor nor
torch.distributed._tensor), so gradnorm.torch finds no DTensor class there and
its DTensor path would never run. This module has the part of DTensor's
interface that gradnorm.torch uses: ``to_local()``, ``device_mesh`` with
``get_coordinate()`` and ``get_group(dim)``, and ``placements`` of
``Shard``/``Replicate``/``Partial`` objects with ``is_replicate()`` and
``is_partial()``. Like the real one it
is a torch.Tensor wrapper subclass of the global shape (so it can be assigned
to a parameter's ``.grad``) whose data is its local shard; any torch operation
on the wrapper itself raises, so a test fails if gradnorm reads the wrapper
instead of ``to_local()``.

    with dtensor_stand_in.registered():
        p.grad = DTensor(local, DeviceMesh([dp_rank, tp_rank], [dp, tp]),
                         [Shard(0), Replicate()], global_shape)
        gn.get_grad_norm([p], dp, tp)
"""

import contextlib

import torch

from gradnorm import _torch_dtensor as gn_dtensor


class _Placement:
    """What a placement is not, unless a subclass says otherwise."""

    def is_shard(self, dim=None):
        return False

    def is_replicate(self):
        return False

    def is_partial(self):
        return False


class Shard(_Placement):
    """Sharded along tensor dimension `dim` over a mesh dimension."""

    def __init__(self, dim):
        self.dim = dim

    def is_shard(self, dim=None):
        return dim is None or dim == self.dim


class Replicate(_Placement):
    """The same full tensor on every coordinate of a mesh dimension."""

    def is_replicate(self):
        return True


class Partial(_Placement):
    """Local values that still wait to be summed over a mesh dimension."""

    def is_partial(self):
        return True


class DeviceMesh:
    """This rank's coordinate in the mesh (None when not in it) and the
    process group of each mesh dimension."""

    def __init__(self, coordinate, groups):
        self._coordinate = None if coordinate is None else list(coordinate)
        self._groups = list(groups)
        self.ndim = len(self._groups)

    def get_coordinate(self):
        return self._coordinate

    def get_group(self, mesh_dim=None):
        return self._groups[0 if mesh_dim is None else mesh_dim]


class DTensor(torch.Tensor):
    """A tensor of `global_shape` whose local shard is `local` (kept by
    reference: to_local() returns that very tensor)."""

    @staticmethod
    def __new__(cls, local, device_mesh, placements, global_shape):
        assert len(placements) == device_mesh.ndim
        t = torch.Tensor._make_wrapper_subclass(
            cls, tuple(global_shape), dtype=local.dtype, device=local.device)
        t._local_tensor = local
        t._device_mesh = device_mesh
        t._placements = tuple(placements)
        return t

    @property
    def device_mesh(self):
        return self._device_mesh

    @property
    def placements(self):
        return self._placements

    def to_local(self):
        return self._local_tensor

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(
            f"the DTensor stand-in has no {func}: gradnorm must read a DTensor "
            "through to_local()")


@contextlib.contextmanager
def registered():
    """Makes gradnorm.torch treat the stand-in classes as DTensor and
    Replicate, as it does torch's own where they exist."""
    saved = gn_dtensor._DTENSOR_TYPES, gn_dtensor._REPLICATE_TYPES
    gn_dtensor._DTENSOR_TYPES = saved[0] + (DTensor,)
    gn_dtensor._REPLICATE_TYPES = saved[1] + (Replicate,)
    try:
        yield
    finally:
        gn_dtensor._DTENSOR_TYPES, gn_dtensor._REPLICATE_TYPES = saved
