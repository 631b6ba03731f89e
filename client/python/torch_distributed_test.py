"""gradnorm.torch across processes: 4 Gloo ranks as 2 DP x 2 TP, checked
against the norm of the full (unsharded) gradients computed on every rank,
plain and DTensor gradients (a stand-in: Debian's torch 1.13 has no DTensor);
and a rank with a gradient gradnorm cannot view, which fails with
INVALID_ARGUMENT while every other rank fails with ABORTED, none waiting."""

import math
import os
import tempfile
import time
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gradnorm
import gradnorm.torch as gn
from gradnorm import _torch_dtensor
from dtensor_stand_in import DTensor, DeviceMesh, Replicate, Shard
import dtensor_stand_in

DP, TP = 2, 2
WORLD = DP * TP


def full_gradients(seed):
    """The model's full gradients: W (8 x 6, sharded by columns over TP) and
    b (6, replicated over TP). FSDP-style, DP ranks hold disjoint halves of
    each TP shard, flattened."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 6, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    return w, b


def shard(w, b, dp_rank, tp_rank, dtype):
    w_tp = w.chunk(TP, dim=1)[tp_rank].contiguous().flatten()
    w_local = w_tp.chunk(DP)[dp_rank]
    b_local = b.chunk(DP)[dp_rank]  # the same on both TP ranks
    pw = torch.nn.Parameter(torch.zeros(w_local.numel(), dtype=dtype))
    pb = gn.mark_tp_replicated(torch.nn.Parameter(torch.zeros(b_local.numel(), dtype=dtype)))
    pw.grad = w_local.to(dtype).clone()
    pb.grad = b_local.to(dtype).clone()
    return [pw, pb]


def dtensor_gradients(seed, dtype):
    """Full gradients of a model held as DTensors on the (DP, TP) mesh: W
    (8 x 6, Shard(0) over DP, Shard(1) over TP), b (6, Shard(0) over DP,
    Replicate over TP), c (5, Replicate over both), and a plain e (8, rank r
    holds its r-th quarter). Values as stored in `dtype`, in fp64."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(8, 6, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    c = torch.randn(5, generator=gen, dtype=torch.float64) * 2
    e = torch.randn(8, generator=gen, dtype=torch.float64)
    return [t.to(dtype).double() for t in (w, b, c, e)]


def dtensor_params(full, dp_rank, tp_rank, dp_group, tp_group, dtype):
    # Debian's torch 1.13 has no DTensor: dtensor_stand_in.DTensor is a
    # stand-in with the interface of DTensor that gradnorm.torch uses, its mesh
    # groups the real dp and tp groups.
    w, b, c, e = full
    mesh = DeviceMesh([dp_rank, tp_rank], [dp_group, tp_group])
    pieces = [
        (w.chunk(TP, dim=1)[tp_rank].chunk(DP, dim=0)[dp_rank],
         [Shard(0), Shard(1)], w.shape),
        (b.chunk(DP)[dp_rank], [Shard(0), Replicate()], b.shape),
        (c, [Replicate(), Replicate()], c.shape),
    ]
    params = []
    for local, placements, shape in pieces:
        p = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = DTensor(local.to(dtype).contiguous(), mesh, placements, shape)
        params.append(p)
    pe = torch.nn.Parameter(torch.zeros(2, dtype=dtype))
    pe.grad = e.chunk(WORLD)[dp_rank * TP + tp_rank].to(dtype).clone()
    params.append(pe)
    return params


def reference(tensors, p):
    flat = torch.cat([t.double().flatten() for t in tensors])
    return torch.linalg.vector_norm(flat, p).item()


def local_grad(parameter):
    """The tensor gradnorm reads and scales for a parameter's gradient."""
    grad = parameter.grad
    return grad.to_local() if _torch_dtensor._is_dtensor(grad) else grad


def worker(rank, store_path, failures, checks):
    try:
        store = dist.FileStore(store_path, WORLD)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
        dp_rank, tp_rank = rank // TP, rank % TP
        tp_groups = [dist.new_group([d * TP + t for t in range(TP)]) for d in range(DP)]
        dp_groups = [dist.new_group([d * TP + t for d in range(DP)]) for t in range(TP)]
        tp_group, dp_group = tp_groups[dp_rank], dp_groups[tp_rank]
        world_group = dist.new_group(list(range(WORLD)))
        if checks == "norms":
            run_checks(rank, dp_rank, tp_rank, dp_group, tp_group)
            run_hsdp_checks(dp_rank, tp_rank, dp_group, tp_group, world_group)
        else:
            run_bad_rank_checks(rank, dp_rank, tp_rank, dp_group, tp_group)
        dist.barrier()
        dist.destroy_process_group()
    except BaseException as e:  # reported to the parent, which fails the test
        import traceback
        failures.put(f"rank {rank}: {e!r}\n{traceback.format_exc()}")
        raise


def run_checks(rank, dp_rank, tp_rank, dp_group, tp_group):
    # Full-gradient reference, fp32 and bf16 storage, every norm type.
    for dtype in (torch.float32, torch.bfloat16):
        w, b = full_gradients(seed=7)
        w, b = w.to(dtype).double(), b.to(dtype).double()  # what the ranks store
        for p in (2.0, 1.0, 3.0, math.inf):
            params = shard(w, b, dp_rank, tp_rank, dtype)
            got = gn.get_grad_norm(params, dp_group, tp_group, norm_type=p)
            want = reference([w, b], p)
            assert got == pytest.approx(want, rel=1e-12), (dtype, p, got, want)

    # Seed vector: TP=2 with W shards [1,2] | [2,4] and replicated b=[0,1].
    w_shard = [[1.0, 2.0], [2.0, 4.0]][tp_rank]
    pw = torch.nn.Parameter(torch.zeros(2))
    pw.grad = torch.tensor(w_shard)
    pb = gn.mark_tp_replicated(torch.nn.Parameter(torch.zeros(2)))
    pb.grad = torch.tensor([0.0, 1.0])
    got = gn.get_grad_norm([pw, pb], None, tp_group)
    assert got == pytest.approx(math.sqrt(26), rel=1e-15), got

    # Clipping the shards clips the full gradient to max_norm.
    w, b = full_gradients(seed=8)
    params = shard(w, b, dp_rank, tp_rank, torch.float32)
    total = gn.get_grad_norm(params, dp_group, tp_group)
    gn.clip_grad_by_total_norm_(params, 1.0, total)
    local_sq = sum(g.grad.double().pow(2).sum().item() for g in
                   (params if tp_rank == 0 else params[:1]))
    t = torch.tensor([local_sq], dtype=torch.float64)
    dist.all_reduce(t)
    assert math.sqrt(t.item()) == pytest.approx(1.0, rel=1e-6)

    # DTensor gradients: local shards, replicas counted once (b on TP
    # coordinate 0, c on rank 0 only), a plain gradient among them.
    with dtensor_stand_in.registered():
        for dtype in (torch.float32, torch.bfloat16):
            full = dtensor_gradients(seed=11, dtype=dtype)
            for p in (2.0, math.inf):
                params = dtensor_params(full, dp_rank, tp_rank, dp_group,
                                        tp_group, dtype)
                got = gn.get_grad_norm(params, dp_group, tp_group, norm_type=p)
                want = reference(full, p)
                assert got == pytest.approx(want, rel=1e-12), (dtype, p, got, want)

        # Clipping scales every local shard, replicas on every rank alike.
        full = dtensor_gradients(seed=12, dtype=torch.float32)
        params = dtensor_params(full, dp_rank, tp_rank, dp_group, tp_group,
                                torch.float32)
        grads = [local_grad(q) for q in params]
        before = [g.double() for g in grads]
        total = gn.get_grad_norm(params, dp_group, tp_group)
        assert total > 1.0
        gn.clip_grad_by_total_norm_(params, 1.0, total)
        coef = 1.0 / (total + 1e-6)
        for q, g, old in zip(params, grads, before):
            assert local_grad(q) is g
            spacing = torch.finfo(torch.float32).eps * (old * coef).abs()
            assert bool(((g.double() - old * coef).abs() <= spacing).all())
        counted = [True, tp_rank == 0, rank == 0, True]
        local_sq = sum(g.double().pow(2).sum().item()
                       for g, is_counted in zip(grads, counted) if is_counted)
        t = torch.tensor([local_sq], dtype=torch.float64)
        dist.all_reduce(t)
        assert math.sqrt(t.item()) == pytest.approx(1.0, rel=1e-6)

    # A rank with no gradients joins and contributes 0; nobody hangs.
    params = shard(*full_gradients(seed=9), dp_rank, tp_rank, torch.float32)
    if rank == 3:
        params = [torch.nn.Parameter(torch.zeros(3))]
    got = gn.get_grad_norm(params, dp_group, tp_group)
    w, b = full_gradients(seed=9)
    w_tp1 = w.chunk(TP, dim=1)[1].contiguous().flatten()
    kept = [w.chunk(TP, dim=1)[0], w_tp1.chunk(DP)[0], b]
    assert got == pytest.approx(reference(kept, 2.0), rel=1e-6)

    # NaN on one rank wins on every rank, also for the inf-norm (MAX).
    for p in (2.0, math.inf):
        params = shard(*full_gradients(seed=10), dp_rank, tp_rank, torch.float32)
        if rank == 2:
            params[0].grad[0] = math.nan
        if rank == 1:
            params[0].grad[1] = math.inf
        got = gn.get_grad_norm(params, dp_group, tp_group, norm_type=p)
        assert math.isnan(got), (p, got)


def run_hsdp_checks(dp_rank, tp_rank, dp_group, tp_group, world_group):
    """HSDP: the 4 ranks as a (replicate 2, shard 2) mesh. A gradient is
    Shard(0) over the shard dimension (groups {0,1}, {2,3}) and Replicate over
    the replicate one (groups {0,2}, {1,3}); the norm is reduced over the
    flattened 4-rank dp_cp group, as NeMo's is, so each replicate group is a
    part of the reduced group, not the whole of it, and its replicas must
    still be counted once."""
    with dtensor_stand_in.registered():
        gen = torch.Generator().manual_seed(13)
        h = torch.randn(8, generator=gen, dtype=torch.float64)
        mesh = DeviceMesh([dp_rank, tp_rank], [dp_group, tp_group])
        for p in (2.0, 1.0, math.inf):
            param = torch.nn.Parameter(torch.zeros(8))
            param.grad = DTensor(h.chunk(2)[tp_rank].float().contiguous(), mesh,
                                 [Replicate(), Shard(0)], (8,))
            got = gn.get_grad_norm([param], world_group, None, norm_type=p)
            want = reference([h.float()], p)
            assert got == pytest.approx(want, rel=1e-12), ("hsdp", p, got, want)
        # The one-process drop-in refuses a gradient spread over ranks rather
        # than clip by the norm of this rank's shard alone.
        with pytest.raises(ValueError, match="over a mesh of 4 ranks"):
            gn.clip_grad_norm_([param], 1.0)


def bad_gradient(kind):
    """A parameter whose gradient gradnorm cannot view, and the problem its
    error names."""
    if kind == "strided":
        p = torch.nn.Parameter(torch.zeros(4, 4))
        p.grad = torch.zeros(4, 8)[:, :4]
        return p, ("gradient 0 has strides (8, 1) for shape (4, 4), which do "
                   "not cover its elements densely")
    if kind == "int":
        p = torch.zeros(4, dtype=torch.int32)  # no int Parameter: a stand-in
        p.grad = torch.ones(4, dtype=torch.int32)
        return p, "gradient 0 has dtype torch.int32"
    if kind == "sparse":
        p = torch.nn.Parameter(torch.zeros(3))
        p.grad = torch.tensor([0.0, 2.0, 0.0]).to_sparse()
        return p, "gradient 0 has layout torch.sparse_coo"
    if kind == "csr":
        # torch refuses a CSR gradient on a dense parameter: a stand-in.
        p = types.SimpleNamespace(grad=torch.eye(2).to_sparse_csr())
        return p, "gradient 0 has layout torch.sparse_csr"
    if kind == "partial":
        p = torch.nn.Parameter(torch.zeros(2))
        p.grad = dtensor_stand_in.DTensor(
            torch.ones(2), dtensor_stand_in.DeviceMesh([0], [None]),
            [dtensor_stand_in.Partial()], (2,))
        return p, "a DTensor gradient is Partial over mesh dimension 0"
    assert kind == "meta", kind
    p = torch.nn.Parameter(torch.zeros(2, device="meta"))
    p.grad = torch.zeros(2, device="meta")
    return p, "gradient 0 is on device meta"


def expect_bad_rank(call, rank, bad_rank, problem):
    """call() fails on every rank: with the problem on bad_rank, ABORTED on
    the others."""
    try:
        call()
    except gradnorm.Error as e:
        if rank == bad_rank:
            assert isinstance(e, gradnorm.InvalidArgumentError), e
            assert e.code == "INVALID_ARGUMENT"
            assert e.message.startswith(problem), e
        else:
            assert e.code == "ABORTED", e
            assert e.message.startswith(
                "1 rank(s) of the dp_cp x tp group failed to compute their "
                "partial norm"), e
    else:
        raise AssertionError(f"rank {rank}: no error with rank {bad_rank}'s "
                             f"bad gradient ({problem})")


def run_bad_rank_checks(rank, dp_rank, tp_rank, dp_group, tp_group):
    w, b = full_gradients(seed=14)
    want = reference([w, b], 2.0)
    # Each kind on another rank, with each reduction (SUM, and MAX for inf).
    # The bad ranks' peers raise nothing of their own before the reductions:
    # a peer without that gradient at all (an unused parameter, another
    # rank's expert) must not be left waiting in them either.
    for bad_rank, kind, p in ((2, "strided", 2.0), (1, "int", math.inf),
                              (3, "sparse", 2.0), (0, "meta", 1.0),
                              (1, "csr", 2.0), (2, "partial", 2.0)):
        params = shard(w, b, dp_rank, tp_rank, torch.float32)
        problem = None
        if rank == bad_rank:
            params[0], problem = bad_gradient(kind)
        elif kind == "partial":
            params[0].grad = None
        with dtensor_stand_in.registered():
            expect_bad_rank(
                lambda: gn.get_grad_norm(params, dp_group, tp_group,
                                         norm_type=p),
                rank, bad_rank, problem)
        # The groups are still in step: the next call succeeds everywhere.
        params = shard(w, b, dp_rank, tp_rank, torch.float32)
        got = gn.get_grad_norm(params, dp_group, tp_group)
        assert got == pytest.approx(want, rel=1e-6), (kind, got, want)

    # The same through Clipper (job group: the world), which scales nothing.
    clipper = gn.Clipper(norm_type=2, max_norm=1.0, dp_cp_group=dp_group,
                         tp_group=tp_group)
    params = shard(w, b, dp_rank, tp_rank, torch.float32)
    problem = None
    if rank == 2:
        params[0], problem = bad_gradient("strided")
    before = [q.grad.clone() for q in params]
    expect_bad_rank(lambda: clipper.step(0, params), rank, 2, problem)
    assert all(torch.equal(q.grad, g) for q, g in zip(params, before))
    params = shard(w, b, dp_rank, tp_rank, torch.float32)
    result = clipper.step(1, params)
    assert result["total_norm"] == pytest.approx(want, rel=1e-6)
    assert result["action"] == "ACTION_CLIP"


def run_ranks(checks, timeout_s):
    """Runs worker(checks) on WORLD spawned ranks; fails on any rank's error
    and on any rank still running after timeout_s (a hang)."""
    ctx = mp.get_context("spawn")
    failures = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory() as tmp:
        store_path = os.path.join(tmp, "store")
        procs = [ctx.Process(target=worker,
                             args=(r, store_path, failures, checks))
                 for r in range(WORLD)]
        for proc in procs:
            proc.start()
        deadline = time.monotonic() + timeout_s
        for proc in procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        hung = [r for r, proc in enumerate(procs) if proc.is_alive()]
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        errors = []
        while not failures.empty():
            errors.append(failures.get())
        assert not errors, "\n".join(errors)
        assert not hung, f"ranks {hung} still ran after {timeout_s} s"
        assert [proc.exitcode for proc in procs] == [0] * WORLD


def test_two_dp_by_two_tp_matches_full_gradient():
    run_ranks("norms", timeout_s=90)


def test_rank_with_bad_gradient_fails_alone_and_nobody_hangs():
    run_ranks("bad_rank", timeout_s=60)
