"""gradnorm.torch.Clipper: locally, and as two jobs of one run against a real
coordinator process (//server:coordinator)."""

import math
import os
import subprocess
import tempfile
import threading
import time

import pytest
import torch

import gradnorm.torch as gn


def params(*grads):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g, dtype=torch.float32)
        out.append(p)
    return out


def test_local_clipper_clips_seed_vector():
    grads = params([3, 4], [1, 2])
    result = gn.Clipper(norm_type=2, max_norm=1.0).step(0, grads)
    assert result["total_norm"] == 5.477225575051661
    assert result["action"] == "ACTION_CLIP"
    assert result["job_partial"] == 30.0
    clipped = math.sqrt(sum(p.grad.double().pow(2).sum().item() for p in grads))
    assert clipped == pytest.approx(1.0, rel=1e-6)


def test_local_clipper_skips_nonfinite():
    grads = params([math.nan, 4])
    result = gn.Clipper(norm_type=2, max_norm=1.0).step(0, grads)
    assert result["action"] == "ACTION_SKIP" and result["nonfinite"]
    assert grads[0].grad[1].item() == 4.0


@pytest.fixture
def coordinator():
    binary = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"],
                          "server", "coordinator")
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        proc = subprocess.Popen([binary, "--listen=127.0.0.1:0",
                                 f"--port_file={port_file}", "--store=memory"],
                                stdout=subprocess.DEVNULL)
        try:
            for _ in range(200):
                if os.path.exists(port_file) and open(port_file).read().strip():
                    break
                time.sleep(0.05)
            yield "127.0.0.1:" + open(port_file).read().strip()
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_two_jobs_share_one_decision(coordinator):
    grads = [params([3, 4]), params([1, 2])]  # job 0 and job 1
    results = [None, None]

    def job(i):
        clipper = gn.Clipper(norm_type=2, max_norm=1.0, address=coordinator,
                             run_id="python-clipper-test", participant=i,
                             participants=2, report_timeout_s=20)
        results[i] = clipper.step(0, grads[i])

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results[0] is not None and results[1] is not None
    for r in results:
        assert r["total_norm"] == pytest.approx(5.477225575051661, rel=1e-15)
        assert r["action"] == "ACTION_CLIP"
    assert results[0]["job_partial"] == 25.0 and results[1]["job_partial"] == 5.0
    total = math.sqrt(sum(p.grad.double().pow(2).sum().item()
                          for ps in grads for p in ps))
    assert total == pytest.approx(1.0, rel=1e-6)
