"""gradnorm.torch on one process: the seed's vectors, agreement with
torch.nn.utils.clip_grad_norm_ (fp32 and bf16), non-finite handling, and
argument errors."""

import math

import pytest
import torch

import gradnorm.torch as gn


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


# --- the seed's vectors (DESIGN.md section 2) ---------------------------------

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
    with pytest.raises(ValueError, match="INVALID_ARGUMENT: max norm"):
        gn.clip_grad_by_total_norm_(grads, max_norm, 5.0)
    with pytest.raises(ValueError, match="INVALID_ARGUMENT: max norm"):
        gn.clip_grad_norm_(grads, max_norm)
    assert grads[0].grad.tolist() == [3.0, 4.0]


def test_rejects_negative_total_and_integer_dtype():
    with pytest.raises(ValueError, match="total norm -1.0 is negative"):
        gn.clip_grad_by_total_norm_(params([3, 4]), 1.0, -1.0)
    with pytest.raises(ValueError, match="dtype"):
        gn.get_grad_norm(params([3, 4]), None, None, dtype=torch.int32)
    p = torch.zeros(2, dtype=torch.int64)
    p.grad = torch.tensor([1, 2], dtype=torch.int64)
    with pytest.raises(ValueError, match="torch.int64; expected float32"):
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
    with pytest.raises(ValueError, match=r"tensor 1 is on device meta; "
                                         "expected a CPU or CUDA tensor"):
        gn.get_grad_norm(grads, None, None)


def test_sparse_gradient_is_rejected():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([0.0, 2.0, 0.0]).to_sparse()
    with pytest.raises(ValueError, match=r"tensor 0 has layout torch.sparse_coo; "
                                         r"expected a dense \(torch.strided\)"):
        gn.clip_grad_norm_([p], 1.0)


def test_views_keep_gradients_alive_and_release():
    from gradnorm import _gradnorm
    grads = params([3, 4])
    views = _gradnorm.TensorViews.from_parameters(grads)
    assert views.num_grads == 1
    assert views.grad(0) is grads[0].grad
    grads[0].grad = None  # the views still hold the tensor
    assert views.partial_norm(2.0) == (25.0, False)
    views.release()
    with pytest.raises(RuntimeError, match="after release"):
        views.partial_norm(2.0)


def test_autograd_gradients_and_subclass_gradients():
    from gradnorm import _gradnorm
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    (w * torch.tensor([3.0, 4.0])).sum().backward()  # never read from Python
    (b * 12.0).sum().backward()
    assert gn.get_grad_norm([w, b], None, None) == 13.0

    class Sub(torch.Tensor):
        pass

    b.grad = torch.tensor([12.0]).as_subclass(Sub)
    assert _gradnorm.TensorViews.from_parameters([w, b]) is None
    assert gn.get_grad_norm([w, b], None, None) == 13.0  # the general path
    assert gn.clip_grad_norm_([w, b], 6.5).item() == 13.0
    assert_ulps(w.grad, torch.tensor([3.0, 4.0], dtype=torch.float64) * 6.5 /
                (13.0 + 1e-6))


def test_from_torch_views_keep_their_own_list():
    from gradnorm import _gradnorm
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([12.0])]
    views = _gradnorm.TensorViews.from_torch(grads, gn._DTYPE_CODES)
    grads.clear()  # the caller's list; the views keep the tensors alive
    assert views.num_grads == 2
    assert views.partial_norm(2.0) == (169.0, False)
    views.release()


def test_subclass_gradient_on_another_device_is_rejected():
    class Sub(torch.Tensor):
        pass

    from gradnorm import _gradnorm
    grad = torch.empty(4, device="meta").as_subclass(Sub)
    with pytest.raises(ValueError, match=r"tensor 1 is on device type 'meta'; "
                                         r"expected cpu or cuda"):
        _gradnorm.TensorViews.from_torch([torch.ones(2), grad], gn._DTYPE_CODES)


def test_many_parameters_of_every_kind_in_one_call():
    """Hundreds of parameters (from_parameters reads them in a pipeline):
    every gradient is counted once, in order, whatever its kind."""
    from gradnorm import _gradnorm
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
    reference = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))

    views = _gradnorm.TensorViews.from_parameters(iter(parameters))
    assert views.num_grads == len(grads)
    assert all(views.grad(k) is g for k, g in enumerate(grads))
    assert views.noncontiguous == [k for k, g in enumerate(grads)
                                   if not g.is_contiguous()]
    views.release()
    for same in (parameters, tuple(parameters), iter(parameters)):
        assert gn.get_grad_norm(same, None, None) == pytest.approx(
            reference, rel=1e-12)

    class Sub(torch.Tensor):
        pass

    parameters[250].grad = parameters[250].grad.as_subclass(Sub)
    assert _gradnorm.TensorViews.from_parameters(parameters) is None
    assert gn.get_grad_norm(parameters, None, None) == pytest.approx(
        reference, rel=1e-12)  # the general path
