"""gradnorm on CUDA tensors, through the installed package: agreement with
torch.nn.utils.clip_grad_norm_ and an fp64 reference in fp32 and bf16, the
clip in each gradient's own storage, torch's current stream, and a
single-process NCCL group. Skipped where torch has no CUDA device (the last
test checks the error a machine without CUDA gives instead)."""

import ctypes
import math
import os
import socket
from array import array

import pytest
import torch
import torch.distributed as dist

import gradnorm
import gradnorm.torch as gn
from gradnorm import _lib, _tensors

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="torch sees no CUDA device")


def model(dtype, seed=0, scale=1e-2):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(512, 256), (256,), (1024, 512), (512,), (3, 5), (7,)]
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device="cuda"))
        p.grad = (torch.randn(shape, generator=gen) * scale).to(dtype).cuda()
        params.append(p)
    return params


def reference_norm(grads, p=2.0):
    flat = torch.cat([g.detach().double().flatten().cpu() for g in grads])
    return torch.linalg.vector_norm(flat, ord=p).item()


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_agrees_with_torch_and_fp64(dtype):
    ours = model(dtype)
    theirs = model(dtype)
    before = [p.grad.clone() for p in ours]
    expected = reference_norm(before)
    exact = gn.get_grad_norm(ours, None, None)
    assert exact == pytest.approx(expected, rel=1e-12)
    max_norm = expected / 4
    total = gn.clip_grad_norm_(ours, max_norm)
    torch_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert total.device.type == "cuda"
    assert total.item() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(torch_total.item(), rel=1e-2)
    coef = max_norm / (exact + 1e-6)
    coef32 = torch.tensor(coef, dtype=torch.float32)
    for p, g in zip(ours, before):
        # The product in fp32, stored in the gradient's own dtype.
        assert torch.equal(p.grad, (g.float() * coef32.cuda()).to(dtype))
    assert gn.get_grad_norm(ours, None, None) == pytest.approx(
        reference_norm([p.grad for p in ours]), rel=1e-6)


@cuda
def test_runs_on_torchs_current_stream():
    params = model(torch.float32)
    side = torch.cuda.Stream()
    big = torch.randn(4096, 4096, device="cuda")
    with torch.cuda.stream(side):
        # Work queued on the side stream writes the gradient after a long
        # matmul; a norm on any other stream would read the old values.
        torch.cuda._sleep(50_000_000)
        params[0].grad.copy_((big @ big)[:512, :256] * 1e-6)
        total = gn.get_grad_norm(params, None, None)
    torch.cuda.synchronize()
    assert total == pytest.approx(reference_norm([p.grad for p in params]),
                                  rel=1e-6)


@cuda
def test_single_process_nccl_group():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1)
    try:
        params = model(torch.float32)
        expected = reference_norm([p.grad for p in params])
        group = dist.group.WORLD
        assert gn.get_grad_norm(params, group, group) == pytest.approx(
            expected, rel=1e-12)
        clipper = gn.Clipper(norm_type=2, max_norm=expected / 2,
                             dp_cp_group=group, job_group=group)
        result = clipper.step(0, params)
        assert result["action"] == "ACTION_CLIP"
        assert result["total_norm"] == pytest.approx(expected, rel=1e-12)
        assert reference_norm([p.grad for p in params]) == pytest.approx(
            expected / 2, rel=1e-5)
        clipper.close()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists")
def test_cuda_tensor_without_cuda_is_a_clear_error():
    host = (ctypes.c_float * 4)(1, 2, 3, 4)
    views = _tensors.TensorList([host], array("Q", [ctypes.addressof(host)]),
                                array("q", [4]), array("i", [0]),
                                array("i", [0]))
    with pytest.raises(gradnorm.Error) as e:
        _tensors.partial_norm(views, 2.0)
    assert e.value.code == "FAILED_PRECONDITION"
    assert "CUDA" in e.value.message
