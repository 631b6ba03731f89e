"""gradnorm.torch on one process: the seed's vectors, agreement with
torch.nn.utils.clip_grad_norm_ (fp32 and bf16), dense non-contiguous
gradients, non-finite handling, argument and gradient errors, and the views
gradnorm.torch hands to libgradnorm (gn._grads)."""

import gc
import os
import math
import weakref

import pytest
import torch

import gradnorm
import gradnorm.torch as gn
from gradnorm import _torch_grads, _torch_groups


def params(*grads, dtype=torch.float32):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g), dtype=dtype))
        p.grad = torch.tensor(g, dtype=dtype)
        out.append(p)
    return out


def assert_ulps(actual, expected, ulps=1):
    """Equal up to `ulps` units in the last place of actual's dtype."""
    spacing = torch.finfo(actual.dtype).eps * expected.abs().double()
    diff = (actual.double() - expected.double()).abs()
    assert bool((diff <= ulps * spacing).all()), (actual, expected)


# --- the reference values of docs/numerics.md --------------------------------

def test_seed_norms():
    grads = params([3, 4], [1, 2])
    assert gn.get_grad_norm(grads, None, None) == 5.477225575051661
    assert gn.get_grad_norm(grads, None, None, norm_type=2.0) == 5.477225575051661
    assert gn.get_grad_norm(grads, None, None, norm_type=1) == 10.0
    assert gn.get_grad_norm(grads, None, None, norm_type=3) == 4.641588833612778
    assert gn.get_grad_norm(params([-3, 7]), None, None, norm_type="inf") == 7.0
    assert gn.get_grad_norm(params([-3, 7]), None, None, norm_type=math.inf) == 7.0


def test_seed_clip_max1_total5():
    grads = params([3, 4], [1, 2])
    gn.clip_grad_by_total_norm_(grads, max_grad_norm=1, total_norm=5.0)
    coef = 1 / (5 + 1e-6)  # 0.19999996
    assert_ulps(grads[0].grad, torch.tensor([3.0, 4.0], dtype=torch.float64) * coef)
    assert_ulps(grads[1].grad, torch.tensor([1.0, 2.0], dtype=torch.float64) * coef)
    assert grads[0].grad[0].item() < 0.6  # really 0.19999996, not 0.2


def test_seed_no_clip_when_coef_at_least_one():
    grads = params([3, 4], [1, 2])
    ptr = grads[0].grad.data_ptr()
    gn.clip_grad_by_total_norm_(grads, max_grad_norm=10, total_norm=5.0)
    assert grads[0].grad.tolist() == [3.0, 4.0]
    assert grads[1].grad.tolist() == [1.0, 2.0]
    assert grads[0].grad.data_ptr() == ptr


def test_seed_clip_max2_total4():
    grads = params([3, 4])
    gn.clip_grad_by_total_norm_(grads, max_grad_norm=2, total_norm=4.0)
    assert_ulps(grads[0].grad,
                torch.tensor([3.0, 4.0], dtype=torch.float64) * (2 / 4.000001))


def test_seed_huge_fp32_gradient():
    grads = params([6e31, 4])
    total = gn.get_grad_norm(grads, None, None)
    assert math.isfinite(total)
    assert total == pytest.approx(float(torch.tensor(6e31)), rel=1e-12)
    gn.clip_grad_by_total_norm_(grads, max_grad_norm=0.3, total_norm=total)
    clipped = grads[0].grad.double().norm().item()
    assert clipped <= 0.3 + 1e-6
    assert clipped == pytest.approx(0.3, rel=1e-6)


# --- agreement with torch ------------------------------------------------------

def random_model(seed, dtype):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 64), torch.nn.LayerNorm(64),
        torch.nn.Linear(64, 10)).to(dtype)
    for p in model.parameters():
        p.grad = (torch.randn_like(p, dtype=torch.float32)
                  * torch.rand(1).item() * 3).to(dtype)
    return model


def grads_of(model):
    return [p.grad.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_matches_torch_fp32(seed, norm_type, max_norm):
    ours, theirs = random_model(seed, torch.float32), random_model(seed, torch.float32)
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm,
                                              norm_type)
    reference = fp64_norm(grads_of(ours), norm_type)
    got = gn.clip_grad_norm_(ours.parameters(), max_norm, norm_type)
    assert got.dtype == torch.float32 and got.dim() == 0
    # gradnorm: the fp64 reference, rounded to the fp32 it returns.
    assert got.item() == pytest.approx(reference, rel=1e-7)
    # torch accumulates in fp32: 1e-6 for p = 2 and inf; its own error for
    # p = 1 and 3 (|g|^p summed in fp32) is larger.
    tolerance = 1e-6 if norm_type in (2.0, math.inf) else 1e-5
    assert got.item() == pytest.approx(expected.item(), rel=tolerance)
    for a, b in zip(grads_of(ours), grads_of(theirs)):
        torch.testing.assert_close(a, b, rtol=2 * tolerance, atol=1e-12)


def fp64_norm(grads, p=2.0):
    flat = torch.cat([g.double().flatten() for g in grads])
    return torch.linalg.vector_norm(flat, p).item()


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torch_bf16_and_fp64_reference(seed):
    ours, theirs = random_model(seed, torch.bfloat16), random_model(seed, torch.bfloat16)
    reference = fp64_norm(grads_of(ours))
    max_norm = reference / 4
    expected = torch.nn.utils.clip_grad_norm_(theirs.parameters(), max_norm)
    got = gn.clip_grad_norm_(ours.parameters(), max_norm)
    # torch returns a bf16 norm: equal within bf16 precision (8 bits).
    assert got.item() == pytest.approx(expected.float().item(), rel=2 ** -7)
    # gradnorm's norm is the fp64 reference.
    assert got.item() == pytest.approx(reference, rel=1e-6)
    for a, b in zip(grads_of(ours), grads_of(theirs)):
        assert a.dtype == torch.bfloat16
        torch.testing.assert_close(a.float(), b.float(), rtol=2 ** -6, atol=0)


def test_bf16_storage_really_clipped():
    model = random_model(3, torch.bfloat16)
    before = grads_of(model)
    ptrs = [p.grad.data_ptr() for p in model.parameters()]
    total = gn.get_grad_norm(model.parameters(), None, None)
    assert total == pytest.approx(fp64_norm(before), rel=1e-12)
    gn.clip_grad_by_total_norm_(model.parameters(), 1.0, total)
    after = grads_of(model)
    assert [p.grad.data_ptr() for p in model.parameters()] == ptrs
    assert all(g.dtype == torch.bfloat16 for g in after)
    assert fp64_norm(after) == pytest.approx(1.0, rel=2 ** -7)
    coef = 1.0 / (total + 1e-6)
    for a, b in zip(after, before):
        # each element rounded once from its fp32 product
        torch.testing.assert_close(a, (b.float() * coef).bfloat16(), rtol=0, atol=0)


def test_non_contiguous_gradient():
    p = torch.nn.Parameter(torch.zeros(3, 4))
    q = torch.nn.Parameter(torch.zeros(3, 4))
    g = torch.arange(12, dtype=torch.float32).reshape(4, 3).t()
    p.grad, q.grad = g.clone().t().contiguous().t(), g.clone()
    assert not p.grad.is_contiguous()
    expected = torch.nn.utils.clip_grad_norm_([q], 1.0)
    got = gn.clip_grad_norm_([p], 1.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    torch.testing.assert_close(p.grad, q.grad)


def test_single_tensor_and_fp64():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    got = gn.clip_grad_norm_(p, 1.0)
    assert got.dtype == torch.float64 and got.item() == 5.0
    assert p.grad.tolist() == pytest.approx([3 / 5.000001, 4 / 5.000001], rel=1e-15)


# --- empty, non-finite, errors ---------------------------------------------------

def test_empty_is_zero():
    assert gn.get_grad_norm([], None, None) == 0.0
    no_grad = torch.nn.Parameter(torch.zeros(3))
    assert gn.get_grad_norm([no_grad], None, None) == 0.0
    assert gn.clip_grad_norm_([no_grad], 1.0).item() == 0.0
    gn.clip_grad_by_total_norm_([no_grad], 1.0, 0.0)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_nan_wins_and_nothing_is_clipped(norm_type):
    grads = params([1, math.inf], [math.nan, 2])
    total = gn.get_grad_norm(grads, None, None, norm_type=norm_type)
    assert math.isnan(total)
    gn.clip_grad_by_total_norm_(grads, 0.1, total)
    assert grads[0].grad.tolist() == [1.0, math.inf]
    returned = gn.clip_grad_norm_(grads, 0.1, norm_type)
    assert math.isnan(returned.item())
    assert grads[0].grad.tolist() == [1.0, math.inf]
    with pytest.raises(RuntimeError, match="non-finite"):
        gn.clip_grad_norm_(grads, 0.1, norm_type, error_if_nonfinite=True)


def test_inf_total_is_inf():
    assert gn.get_grad_norm(params([1, math.inf]), None, None) == math.inf


@pytest.mark.parametrize("norm_type", [0, -1, math.nan, "two"])
def test_rejects_bad_norm_type(norm_type):
    with pytest.raises(ValueError, match="INVALID_ARGUMENT: norm_type"):
        gn.get_grad_norm(params([1]), None, None, norm_type=norm_type)
    with pytest.raises(ValueError, match="INVALID_ARGUMENT: norm_type"):
        gn.clip_grad_norm_(params([1]), 1.0, norm_type=norm_type)


@pytest.mark.parametrize("max_norm", [-1.0, math.nan])
def test_rejects_bad_max_norm(max_norm):
    grads = params([3, 4])
    expected = (r"^INVALID_ARGUMENT: max_norm (-1|nan) is invalid: expected "
                "a value >= 0")
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_by_total_norm_(grads, max_norm, 5.0)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_norm_(grads, max_norm)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.Clipper(max_norm=max_norm)
    assert grads[0].grad.tolist() == [3.0, 4.0]


def test_rejects_negative_total_and_integer_dtype():
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match="^INVALID_ARGUMENT: total_norm -1 is invalid: "
                       "expected a value >= 0"):
        gn.clip_grad_by_total_norm_(params([3, 4]), 1.0, -1.0)
    with pytest.raises(ValueError, match="dtype"):
        gn.get_grad_norm(params([3, 4]), None, None, dtype=torch.int32)
    p = torch.zeros(2, dtype=torch.int64)
    p.grad = torch.tensor([1, 2], dtype=torch.int64)
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: gradient 0 has dtype "
                       r"torch.int64; expected torch.float32, bfloat16"):
        gn.get_grad_norm([p], None, None)


# --- gradients change between calls (nothing is cached across calls) ---------

def test_follows_gradients_changed_between_calls():
    grads = params([3, 4], [1, 2])
    assert gn.get_grad_norm(grads, None, None) == math.sqrt(30)
    grads[0].grad = torch.tensor([6.0, 8.0])  # reassigned
    assert gn.get_grad_norm(grads, None, None) == math.sqrt(105)
    grads[0].grad.resize_(3)  # resized in place (new storage)
    grads[0].grad.copy_(torch.tensor([2.0, 2.0, 1.0]))
    assert gn.get_grad_norm(grads, None, None) == math.sqrt(14)
    grads[0].grad.data = torch.tensor([0.0, 5.0])  # same object, new storage
    assert gn.get_grad_norm(grads, None, None) == math.sqrt(30)
    grads[1].grad = None  # dropped
    assert gn.get_grad_norm(grads, None, None) == 5.0
    grads[1].data = torch.zeros(1, dtype=torch.float64)
    grads[1].grad = torch.tensor([12.0], dtype=torch.float64)  # new dtype
    assert gn.get_grad_norm(grads, None, None) == 13.0
    total = gn.clip_grad_norm_(grads, 1.0)
    assert total.item() == 13.0
    assert_ulps(grads[1].grad, torch.tensor([12.0 / (13.0 + 1e-6)],
                                            dtype=torch.float64))


def test_noncontiguous_gradient_is_read_and_scaled():
    p = torch.nn.Parameter(torch.zeros(2, 2))
    p.grad = torch.tensor([[3.0, 1.0], [4.0, 1.0]]).t()  # transposed view
    assert not p.grad.is_contiguous()
    q = params([0, 0])[0]
    assert gn.get_grad_norm([q, p], None, None) == math.sqrt(27)
    total = gn.clip_grad_norm_([q, p], 1.0)
    assert total.item() == pytest.approx(math.sqrt(27))
    assert_ulps(p.grad, torch.tensor([[3.0, 4.0], [1.0, 1.0]],
                                     dtype=torch.float64) / (math.sqrt(27) + 1e-6))


def test_gradient_on_unsupported_device_is_rejected():
    grads = params([3, 4], [1, 2])
    assert gn.get_grad_norm(grads, None, None) == math.sqrt(30)
    grads[1] = torch.nn.Parameter(torch.zeros(2, device="meta"))
    grads[1].grad = torch.zeros(2, device="meta")
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: gradient 1 is on device "
                       "meta; expected a cpu or cuda tensor"):
        gn.get_grad_norm(grads, None, None)


def test_sparse_gradient_is_rejected():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([0.0, 2.0, 0.0]).to_sparse()
    expected = (r"^INVALID_ARGUMENT: gradient 0 has layout "
                r"torch.sparse_coo; expected a dense \(torch.strided\)")
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_norm_([p], 1.0)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.get_grad_norm([p], None, None)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_by_total_norm_([p], 1.0, 5.0)
    assert p.grad.to_dense().tolist() == [0.0, 2.0, 0.0]


def test_strided_view_gradient_is_rejected():
    p = torch.nn.Parameter(torch.zeros(4, 4))
    p.grad = torch.ones(4, 8)[:, :4]  # rows of 4 with gaps of 4 between
    expected = (r"^INVALID_ARGUMENT: gradient 1 has strides \(8, 1\) for "
                r"shape \(4, 4\), which do not cover its elements densely; "
                r"expected a contiguous \(or permuted-contiguous\) gradient")
    q = params([3, 4])[0]
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.get_grad_norm([q, p], None, None)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_by_total_norm_([q, p], 1.0, 5.0)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.clip_grad_norm_([q, p], 1.0)
    with pytest.raises(gradnorm.InvalidArgumentError, match=expected):
        gn.Clipper(max_norm=1.0).step(0, [q, p])
    # Nothing was scaled, neither the view nor its neighbours.
    assert q.grad.tolist() == [3.0, 4.0]
    assert p.grad._base.tolist() == [[1.0] * 8] * 4


def test_transposed_gradient_matches_its_contiguous_copy():
    """A gradient that is not contiguous but dense (a transpose: every
    element once, in another order) is read and scaled in place."""
    gen = torch.Generator().manual_seed(5)
    p = torch.nn.Parameter(torch.zeros(4, 8))
    p.grad = torch.randn(8, 4, generator=gen).t()
    copy = torch.nn.Parameter(torch.zeros(4, 8))
    copy.grad = p.grad.contiguous()
    assert not p.grad.is_contiguous() and copy.grad.is_contiguous()
    for norm_type in (2.0, 1.0, 3.0, math.inf):
        got = gn.get_grad_norm([p], None, None, norm_type=norm_type)
        assert got == pytest.approx(
            gn.get_grad_norm([copy], None, None, norm_type=norm_type),
            rel=1e-15), norm_type
        assert got == pytest.approx(fp64_norm([copy.grad], norm_type),
                                    rel=1e-14), norm_type

    total = gn.get_grad_norm([p], None, None)
    ptr, stride = p.grad.data_ptr(), p.grad.stride()
    gn.clip_grad_by_total_norm_([p], 0.5, total)
    assert p.grad.data_ptr() == ptr and p.grad.stride() == stride
    assert_ulps(p.grad, copy.grad.double() * (0.5 / (total + 1e-6)))
    assert fp64_norm([p.grad]) == pytest.approx(0.5, rel=1e-6)

    p.grad = copy.grad.t().contiguous().t()  # transposed again, unclipped
    returned = gn.clip_grad_norm_([p], 0.5)
    assert returned.item() == pytest.approx(total, rel=1e-7)  # as fp32
    assert_ulps(p.grad, copy.grad.double() * (0.5 / (total + 1e-6)))

    p.grad = copy.grad.t().contiguous().t()
    result = gn.Clipper(max_norm=0.5).step(0, [p])
    assert result["action"] == "ACTION_CLIP"
    assert result["total_norm"] == pytest.approx(total, rel=1e-15)
    assert_ulps(p.grad, copy.grad.double() * result["clip_coef"])


def test_views_hold_the_gradients_they_point_into():
    """gn._grads reads each gradient's address, size and dtype into the views
    libgradnorm gets, and the views keep every gradient alive while they
    exist, also after the caller dropped the gradients and its list."""
    from gradnorm import _tensors
    parameters = params([3, 4], [12])
    parameters[1].data = parameters[1].data.double()
    parameters[1].grad = parameters[1].grad.double()
    grads = [q.grad for q in parameters]
    local = gn._grads(parameters, None, None, for_norm=True)
    views = local.views
    assert len(views) == 2 and views.error is None
    assert all(a is b for a, b in zip(views.objects, grads))
    assert views.data.tolist() == [g.data_ptr() for g in grads]
    assert views.numel.tolist() == [2, 1]
    assert views.dtype.tolist() == [_tensors.FLOAT32, _tensors.FLOAT64]
    assert views.device.tolist() == [_tensors.DEVICE_CPU] * 2
    assert views.replication is None  # all sharded

    alive = [weakref.ref(g) for g in grads]
    for q in parameters:
        q.grad = None
    del grads
    parameters.clear()
    gc.collect()
    assert all(ref() is not None for ref in alive)
    assert _tensors.partial_norm(views, 2.0) == (169.0, False)
    del local, views
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_views_mark_tp_replicated_gradients():
    w, b, megatron = params([3, 4], [1, 2], [5])
    gn.mark_tp_replicated(b)
    megatron.tensor_model_parallel = False  # Megatron's marking
    from gradnorm import _tensors
    tp = object()  # only whether there is a TP group matters here
    views = gn._grads([w, b, megatron], None, tp, for_norm=True).views
    assert views.replication.tolist() == [
        _tensors.SHARDED, _tensors.TP_REPLICATED, _tensors.TP_REPLICATED]
    # Without a TP group nothing is a replica.
    assert gn._grads([w, b, megatron], None, None,
                     for_norm=True).views.replication is None


def test_autograd_gradients_and_subclass_gradients():
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    (w * torch.tensor([3.0, 4.0])).sum().backward()  # never read from Python
    (b * 12.0).sum().backward()
    assert gn.get_grad_norm([w, b], None, None) == 13.0

    class Sub(torch.Tensor):
        pass

    b.grad = torch.tensor([12.0]).as_subclass(Sub)
    views = gn._grads([w, b], None, None, for_norm=True).views
    assert views.objects[1] is b.grad  # read as it is, not converted
    assert gn.get_grad_norm([w, b], None, None) == 13.0
    assert gn.clip_grad_norm_([w, b], 6.5).item() == 13.0
    assert_ulps(w.grad, torch.tensor([3.0, 4.0], dtype=torch.float64) * 6.5 /
                (13.0 + 1e-6))
    assert type(b.grad) is Sub
    assert_ulps(b.grad.as_subclass(torch.Tensor),
                torch.tensor([12.0], dtype=torch.float64) * 6.5 / (13.0 + 1e-6))


def test_subclass_gradient_on_another_device_is_rejected():
    class Sub(torch.Tensor):
        pass

    p = torch.nn.Parameter(torch.zeros(4, device="meta"))
    p.grad = torch.empty(4, device="meta").as_subclass(Sub)
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"^INVALID_ARGUMENT: gradient 1 is on device "
                       "meta; expected a cpu or cuda tensor"):
        gn.get_grad_norm([params([1, 2])[0], p], None, None)


def test_many_parameters_of_every_kind_in_one_call():
    """Hundreds of parameters: every gradient is counted once, in order,
    whatever its kind (bf16 or fp32, contiguous or transposed, or none)."""
    gen = torch.Generator().manual_seed(3)
    parameters, grads = [], []
    for i in range(300):
        dtype = torch.bfloat16 if i % 5 == 0 else torch.float32
        p = torch.nn.Parameter(torch.zeros(2 + i % 9, 3, dtype=dtype))
        if i % 7 == 3:
            parameters.append(p)  # no gradient
            continue
        g = torch.randn(3, 2 + i % 9, generator=gen).to(dtype)
        p.grad = g.t() if i % 11 == 4 else g.t().contiguous()
        parameters.append(p)
        grads.append(p.grad)
    assert any(not g.is_contiguous() for g in grads)
    reference = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))

    views = gn._grads(parameters, None, None, for_norm=True).views
    assert len(views) == len(grads) and views.error is None
    assert all(a is b for a, b in zip(views.objects, grads))
    assert views.data.tolist() == [g.data_ptr() for g in grads]
    assert views.numel.tolist() == [g.numel() for g in grads]
    assert views.dtype.tolist() == [_torch_grads._DTYPE_CODES[g.dtype] for g in grads]
    for same in (parameters, tuple(parameters), iter(parameters)):
        assert gn.get_grad_norm(same, None, None) == pytest.approx(
            reference, rel=1e-12)

    class Sub(torch.Tensor):
        pass

    parameters[250].grad = parameters[250].grad.as_subclass(Sub)
    assert gn.get_grad_norm(parameters, None, None) == pytest.approx(
        reference, rel=1e-12)


def test_cpu_kernels_run_on_torchs_openmp_threads_with_the_same_result():
    """gradnorm.torch has libgradnorm run its CPU work on torch's OpenMP
    runtime (Debian's torch: the system's libgomp), so the two thread pools
    do not compete; the executor never changes a result."""
    from gradnorm import _lib
    assert gn.openmp_runtime is not None
    assert "libgomp" in os.path.basename(gn.openmp_runtime)
    gen = torch.Generator().manual_seed(3)
    parameters = []
    for shape in [(300, 700), (5000,), (3,)] * 20:
        p = torch.nn.Parameter(torch.empty(shape))
        p.grad = torch.randn(shape, generator=gen)
        parameters.append(p)
    on_torch = [gn.get_grad_norm(parameters, None, None, norm_type=p)
                for p in (1.0, 2.0, 3.0, math.inf)]
    try:
        _lib.check(_lib.lib.gn_use_openmp(None))  # gradnorm's own threads
        own = [gn.get_grad_norm(parameters, None, None, norm_type=p)
               for p in (1.0, 2.0, 3.0, math.inf)]
    finally:
        _lib.check(_lib.lib.gn_use_openmp(gn.openmp_runtime.encode()))
    assert on_torch == own  # bitwise
    with pytest.raises(gradnorm.Error) as e:
        _lib.check(_lib.lib.gn_use_openmp(b"libnot-an-openmp.so"))
    assert e.value.code == "NOT_FOUND"


def test_communicator_of_a_group_is_replaced_after_a_failed_callback(
        monkeypatch):
    """A gn_communicator is unusable after one of its callbacks failed;
    gradnorm.torch keeps one per group and makes a new one for the next
    call, so one timeout does not break the group for the process's life
    (whether the torch group itself still works is torch's to say)."""

    class Impl:
        rank, size = 0, 1

        def all_reduce(self, values, op):
            return values

        broadcast = all_reduce

        def broadcast_bytes(self, data, root):
            return data

        def barrier(self):
            pass

    monkeypatch.setattr(_torch_groups, "_TorchGroup", lambda group: Impl())
    monkeypatch.setattr(_torch_groups, "_COMMUNICATORS", {})
    group = object()
    first = _torch_groups._communicator(group)
    assert _torch_groups._communicator(group) is first
    first.failed = True
    second = _torch_groups._communicator(group)
    assert second is not first and not second.failed
    assert _torch_groups._communicator(group) is second


# --- the exact norm -----------------------------------------------------------

def exact_oracle(grads, p):
    """The correctly rounded norm, from Python's exact rationals: every |g| or
    g^2 as a Fraction, their sum exact, rounded to the nearest double once
    (float(Fraction) rounds correctly), then the correctly rounded sqrt."""
    from fractions import Fraction
    total = Fraction(0)
    for g in grads:
        for v in g.detach().to(torch.float64).flatten().tolist():
            f = abs(Fraction(v))
            total += f * f if p == 2 else f
    s = float(total)
    return math.sqrt(s) if p == 2 else s


@pytest.mark.parametrize("p", [1, 2])
def test_exact_norm_is_the_correctly_rounded_norm_of_every_dtype(p):
    torch.manual_seed(5)
    grads = [
        torch.randn(3000) * 0.02,
        torch.tensor([6e31, -1e-30, 1e-45, -3e-39, 1.0]),
        (torch.randn(2000) * 0.1).to(torch.bfloat16),
        torch.tensor([3e38, -1e-38, 9e-41], dtype=torch.bfloat16),
        (torch.randn(2000) * 0.1).to(torch.float16),
        torch.tensor([65504, -6e-8, 1e-5], dtype=torch.float16),
        torch.randn(1000, dtype=torch.float64) * 1e-3,
        torch.tensor([1e150, 5e-324, -1e-310], dtype=torch.float64),
        torch.zeros(0),
    ]
    parameters = []
    for g in grads:
        parameter = torch.nn.Parameter(torch.zeros_like(g))
        parameter.grad = g.clone()
        parameters.append(parameter)
    expected = exact_oracle(grads, p)
    norm = gn.get_grad_norm(parameters, None, None, p, exact=True)
    assert norm == expected  # bitwise: the one rounding is the oracle's
    # The same gradients in another order and split differently: same bits.
    pieces = []
    for g in reversed(grads):
        for chunk in g.split(max(1, g.numel() // 3)):
            piece = torch.nn.Parameter(torch.zeros_like(chunk))
            piece.grad = chunk.clone()
            pieces.append(piece)
    assert gn.get_grad_norm(pieces, None, None, p, exact=True) == norm


def test_exact_norm_is_refused_for_other_p():
    parameter = torch.nn.Parameter(torch.zeros(3))
    parameter.grad = torch.ones(3)
    with pytest.raises(gradnorm.InvalidArgumentError, match="exact partials"):
        gn.get_grad_norm([parameter], None, None, 3, exact=True)
    assert gn.get_grad_norm([parameter], None, None, "inf", exact=True) == 1.0
