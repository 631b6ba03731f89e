"""gradnorm.torch with DTensor gradients on one process (a Gloo group of one
rank as the TP group): a gradient contributes its local shard, a Replicate
over the TP mesh dimension is counted on coordinate 0 only (the others mark
it counted elsewhere), clipping scales every local shard, Clipper does the
same, and a Partial gradient's norm is refused.

Debian's torch is 1.13, which has no DTensor (no torch.distributed.tensor or
torch.distributed._tensor): the gradients here are dtensor_stand_in.DTensor, a
stand-in with the interface of DTensor that gradnorm.torch uses, registered
with gradnorm.torch for each test only."""

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist

import gradnorm
import gradnorm.torch as gn
from gradnorm import _torch_dtensor
from gradnorm._tensors import COUNTED_ELSEWHERE, SHARDED
from dtensor_stand_in import DTensor, DeviceMesh, Partial, Replicate, Shard
import dtensor_stand_in


@pytest.fixture(scope="module")
def tp():
    """A TP group of this process only (torch.distributed, Gloo)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = dist.FileStore(os.path.join(tmp, "store"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)
        try:
            yield dist.new_group([0])
        finally:
            dist.destroy_process_group()


@pytest.fixture(autouse=True)
def stand_in_registered():
    with dtensor_stand_in.registered():
        yield


def assert_ulps(actual, expected, ulps=1):
    """Equal up to `ulps` units in the last place of actual's dtype."""
    spacing = torch.finfo(actual.dtype).eps * expected.abs().double()
    diff = (actual.double() - expected.double()).abs()
    assert bool((diff <= ulps * spacing).all()), (actual, expected)


def dtensor_param(local, mesh, placements, global_shape):
    p = torch.nn.Parameter(torch.zeros(global_shape))
    p.grad = DTensor(torch.tensor(local), mesh, placements, global_shape)
    return p


def seed_params(tp, tp_coordinate):
    """W's rows [3, 4] (Shard(0) of a 2 x 2 W over TP) and b = [1, 2]
    (Replicate over TP), on the given TP coordinate."""
    mesh = DeviceMesh([tp_coordinate], [tp])
    return [dtensor_param([[3.0, 4.0]], mesh, [Shard(0)], (2, 2)),
            dtensor_param([1.0, 2.0], mesh, [Replicate()], (2,))]


def test_stand_in_is_a_dtensor_gradient():
    p = seed_params(None, 0)[0]
    assert _torch_dtensor._is_dtensor(p.grad)
    # The views point at the local shard, never at the wrapper.
    views = gn._grads([p], None, None, for_norm=False).views
    assert views.objects[0] is p.grad.to_local()
    assert views.data.tolist() == [p.grad.to_local().data_ptr()]
    assert views.numel.tolist() == [2]


def test_replicate_counted_on_tp_coordinate_0_only(tp):
    w, b = seed_params(tp, 0)
    replication = gn._grads([w, b], None, tp, for_norm=True).views.replication
    assert replication.tolist() == [SHARDED, SHARDED]
    assert gn.get_grad_norm([w, b], None, tp) == 5.477225575051661  # sqrt(30)
    w, b = seed_params(tp, 1)
    replication = gn._grads([w, b], None, tp, for_norm=True).views.replication
    assert replication.tolist() == [SHARDED, COUNTED_ELSEWHERE]
    assert gn.get_grad_norm([w, b], None, tp) == 5.0  # W's shard only
    assert gn.get_grad_norm([w, b], None, tp, norm_type=math.inf) == 4.0
    assert gn.get_grad_norm([b], None, tp) == 0.0


def test_replicate_over_dp_cp_dimension_and_both(tp):
    dp = tp  # the only group there is; the mesh's dim 0 is the DP dimension
    for coordinate, counted in (([0, 0], True), ([1, 0], False),
                                ([0, 1], False), ([1, 1], False)):
        mesh = DeviceMesh(coordinate, [dp, tp])
        b = dtensor_param([1.0, 2.0], mesh, [Replicate(), Replicate()], (2,))
        assert gn.get_grad_norm([b], dp, tp) == (
            math.sqrt(5) if counted else 0.0), coordinate
    # Sharded over TP, replicated over DP: only the DP coordinate matters.
    mesh = DeviceMesh([0, 1], [dp, tp])
    w = dtensor_param([3.0, 4.0], mesh, [Replicate(), Shard(0)], (4,))
    assert gn.get_grad_norm([w], dp, tp) == 5.0
    mesh = DeviceMesh([1, 0], [dp, tp])
    w = dtensor_param([3.0, 4.0], mesh, [Replicate(), Shard(0)], (4,))
    assert gn.get_grad_norm([w], dp, tp) == 0.0


def test_replicate_counted_without_a_reduced_group(tp):
    # Without a TP group there is no TP reduction, so nothing is a replica to
    # skip; a rank outside the mesh (coordinate None) counts its shard too.
    w, b = seed_params(tp, 1)
    assert gn.get_grad_norm([w, b], None, None) == 5.477225575051661
    b = dtensor_param([1.0, 2.0], DeviceMesh(None, [tp]), [Replicate()], (2,))
    assert gn.get_grad_norm([b], None, tp) == math.sqrt(5)


def test_plain_and_dtensor_gradients_together(tp):
    w, b = seed_params(tp, 1)
    c = gn.mark_tp_replicated(torch.nn.Parameter(torch.zeros(2)))
    c.grad = torch.tensor([5.0, 5.0])  # plain, replicated: TP rank 0 counts it
    d = torch.nn.Parameter(torch.zeros(1))
    d.grad = torch.tensor([1.0])
    # TP rank 0 (the group's only rank) counts c; coordinate 1 skips b.
    assert gn.get_grad_norm([w, c, b, d], None, tp) == math.sqrt(25 + 50 + 1)


@pytest.mark.parametrize("tp_coordinate", [0, 1])
def test_clip_scales_local_shards_in_place(tp, tp_coordinate):
    w, b = seed_params(tp, tp_coordinate)
    locals_ = [w.grad.to_local(), b.grad.to_local()]
    ptrs = [t.data_ptr() for t in locals_]
    gn.clip_grad_by_total_norm_([w, b], max_grad_norm=1, total_norm=5.0)
    coef = 1 / (5 + 1e-6)
    # Replicas are scaled on every coordinate, counted or not.
    for t, want, ptr in zip(locals_, ([[3.0, 4.0]], [1.0, 2.0]), ptrs):
        assert t.data_ptr() == ptr
        assert_ulps(t, torch.tensor(want, dtype=torch.float64) * coef)
    assert w.grad.to_local() is locals_[0]
    before = [t.clone() for t in locals_]
    gn.clip_grad_by_total_norm_([w, b], max_grad_norm=10, total_norm=1.0)
    assert all(torch.equal(t, u) for t, u in zip(locals_, before))


@pytest.mark.parametrize("tp_coordinate", [0, 1])
def test_clipper_counts_replicas_once_and_clips_every_shard(tp, tp_coordinate):
    # b is Replicate over TP: counted on coordinate 0 only, scaled on both.
    w, b = seed_params(tp, tp_coordinate)
    locals_ = [w.grad.to_local(), b.grad.to_local()]
    clipper = gn.Clipper(norm_type=2, max_norm=1.0, tp_group=tp, job_group=None)
    result = clipper.step(0, [w, b])
    total = 5.477225575051661 if tp_coordinate == 0 else 5.0
    assert result["total_norm"] == total
    assert result["job_partial"] == (30.0 if tp_coordinate == 0 else 25.0)
    assert result["action"] == "ACTION_CLIP"
    assert result["clip_coef"] == 1.0 / (total + 1e-6)
    for t, want in zip(locals_, ([[3.0, 4.0]], [1.0, 2.0])):
        assert_ulps(t, torch.tensor(want, dtype=torch.float64) / (total + 1e-6))
    assert w.grad.to_local() is locals_[0] and b.grad.to_local() is locals_[1]


def test_clipper_clips_sharded_dtensor_gradient(tp):
    w, _ = seed_params(tp, 1)
    clipper = gn.Clipper(norm_type=2, max_norm=1.0, tp_group=tp, job_group=None)
    result = clipper.step(0, [w])
    assert result["total_norm"] == 5.0
    assert result["action"] == "ACTION_CLIP"
    assert w.grad.to_local().double().norm().item() == pytest.approx(1.0, rel=1e-6)


def test_partial_gradient_norm_is_an_error(tp):
    # A Partial gradient's local values still wait to be summed over the mesh
    # dimension: the norm of the sum is not computable from them.
    w, _ = seed_params(tp, 0)
    mesh = DeviceMesh([0], [tp])
    pending = dtensor_param([1.0, 2.0], mesh, [Partial()], (2,))
    expected = ("^INVALID_ARGUMENT: a DTensor gradient is Partial over mesh "
                "dimension 0")
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.get_grad_norm([w, pending], None, tp)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.get_grad_norm([w, pending], None, None)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_norm_([w, pending], max_norm=1.0)
    clipper = gn.Clipper(norm_type=2, max_norm=1.0, tp_group=tp, job_group=None)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        clipper.step(0, [w, pending])
    # Nothing was scaled by the refused calls.
    assert w.grad.to_local().tolist() == [[3.0, 4.0]]
    assert pending.grad.to_local().tolist() == [1.0, 2.0]
    # Scaling is linear, so clipping a Partial gradient by a known total is
    # exact: the summed gradient is scaled by the same factor.
    gn.clip_grad_by_total_norm_([pending], max_grad_norm=1, total_norm=5.0)
    assert_ulps(pending.grad.to_local(),
                torch.tensor([1.0, 2.0], dtype=torch.float64) / (5 + 1e-6))
