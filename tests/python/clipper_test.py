"""gradnorm.torch.Clipper: locally, and against a real coordinator process
(//server:coordinator, from the coordinator_binary fixture): two jobs of one
run, two jobs moving to another coordinator when theirs is killed, and one job under each policy of gradnorm.config.RunConfig (static,
AutoClip, ZClip, the spike rule, the non-finite policies, a round timeout),
its decisions checked against values computed by hand from the rules in
proto/gradnorm/v1/coordinator.proto; and gradnorm.coordinator's
CoordinatorClient (register, get, list, history, summary, errors)."""

import gc
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import torch

import gradnorm
import gradnorm.torch as gn
from gradnorm.config import (AutoClip, RunConfig, SpikeRule, StaticClip,
                             ZClip)
from gradnorm.coordinator import CoordinatorClient


def params(*grads):
    out = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(len(g)))
        p.grad = torch.tensor(g, dtype=torch.float32)
        out.append(p)
    return out


def norm_of(value):
    """One parameter whose gradient's norm (any p) is |value|."""
    return params([value])


def l2(parameters):
    return math.sqrt(sum(p.grad.double().pow(2).sum().item()
                         for p in parameters))


# --- without a coordinator -----------------------------------------------------

def test_local_clipper_clips_seed_vector():
    grads = params([3, 4], [1, 2])
    result = gn.Clipper(norm_type=2, max_norm=1.0).step(0, grads)
    assert result["total_norm"] == 5.477225575051661
    assert result["action"] == "ACTION_CLIP"
    assert result["reason"] == "REASON_ABOVE_MAX_NORM"
    assert result["effective_max_norm"] == 1.0
    assert result["clip_coef"] == 1.0 / (5.477225575051661 + 1e-6)
    assert result["job_partial"] == 30.0
    assert l2(grads) == pytest.approx(1.0, rel=1e-6)


def test_local_clipper_clips_unless_coef_reaches_one():
    # coef = max_norm / (total + 1e-6): exactly 1 leaves the gradients alone,
    # a total equal to max_norm is clipped.
    grads = params([3, 4])
    result = gn.Clipper(norm_type=2, max_norm=5.0 + 1e-6).step(0, grads)
    assert result["action"] == "ACTION_NONE"
    assert result["reason"] == "REASON_WITHIN_MAX_NORM"
    assert result["clip_coef"] == 1.0
    assert grads[0].grad.tolist() == [3.0, 4.0]
    result = gn.Clipper(norm_type=2, max_norm=5.0).step(0, grads)
    assert result["action"] == "ACTION_CLIP"
    assert result["clip_coef"] == 5.0 / (5.0 + 1e-6)
    coef = 5.0 / (5.0 + 1e-6)
    assert grads[0].grad.tolist() == pytest.approx([3 * coef, 4 * coef],
                                                   rel=1e-7)
    assert grads[0].grad[1].item() < 4.0


def test_local_clipper_skips_nonfinite():
    grads = params([math.nan, 4])
    result = gn.Clipper(norm_type=2, max_norm=1.0).step(0, grads)
    assert result["action"] == "ACTION_SKIP" and result["nonfinite"]
    assert result["reason"] == "REASON_NONFINITE"
    assert grads[0].grad[1].item() == 4.0
    clipper = gn.Clipper(norm_type=2, max_norm=1.0, error_if_nonfinite=True)
    with pytest.raises(gradnorm.Error, match="^FAILED_PRECONDITION: the total "
                       "gradient norm is nan") as info:
        clipper.step(1, grads)
    assert info.value.code == "FAILED_PRECONDITION"
    assert grads[0].grad[1].item() == 4.0


def test_failed_constructor_leaves_nothing_to_clean_up(monkeypatch):
    # An object whose __init__ raised is still finalized: its __del__ must
    # not fail on what __init__ never set.
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with pytest.raises(gradnorm.InvalidArgumentError, match="norm_type 'x'"):
        gn.Clipper(norm_type="x")
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match="security 'bogus' is not supported"):
        CoordinatorClient("127.0.0.1:1", security="bogus")
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match="security 'bogus' is not supported"):
        gn.Clipper(address="127.0.0.1:1", run_id="r", participants=1,
                   security="bogus")
    gc.collect()
    assert [repr(u.exc_value) for u in unraisable] == []


# --- with a coordinator --------------------------------------------------------

@pytest.fixture(scope="module")
def coordinator(coordinator_binary):
    """The address of a coordinator process (in-memory store) for this
    module; each test uses its own run ids."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = os.path.join(tmp, "port")
        proc = subprocess.Popen([coordinator_binary, "--listen=127.0.0.1:0",
                                 f"--port_file={port_file}", "--store=memory"],
                                stdout=subprocess.DEVNULL)
        try:
            port = ""
            for _ in range(200):
                if os.path.exists(port_file):
                    with open(port_file) as f:
                        port = f.read().strip()
                    if port:
                        break
                assert proc.poll() is None, "the coordinator exited"
                time.sleep(0.05)
            assert port, "the coordinator wrote no port"
            yield "127.0.0.1:" + port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def job(coordinator, run_id, config):
    """The clipper of the one job of a run with `config`."""
    return gn.Clipper(address=coordinator, run_id=run_id, participant=0,
                      config=config, report_timeout_s=10)


def test_two_jobs_share_one_decision(coordinator):
    grads = [params([3, 4]), params([1, 2])]  # job 0 and job 1
    results = [None, None]

    def run_job(i):
        clipper = gn.Clipper(norm_type=2, max_norm=1.0, address=coordinator,
                             run_id="python-clipper-test", participant=i,
                             participants=2, report_timeout_s=20)
        results[i] = clipper.step(0, grads[i])

    threads = [threading.Thread(target=run_job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results[0] is not None and results[1] is not None
    for r in results:
        assert r["total_norm"] == pytest.approx(5.477225575051661, rel=1e-15)
        assert r["action"] == "ACTION_CLIP"
    assert results[0]["job_partial"] == 25.0 and results[1]["job_partial"] == 5.0
    assert {results[0]["slowest_participant"],
            results[1]["slowest_participant"]} <= {0, 1}
    assert results[0]["slowest_participant"] == results[1]["slowest_participant"]
    total = math.sqrt(sum(p.grad.double().pow(2).sum().item()
                          for ps in grads for p in ps))
    assert total == pytest.approx(1.0, rel=1e-6)


def test_static_policy(coordinator):
    clipper = job(coordinator, "py-static", RunConfig(
        participants=1, max_norm=1.0, clip_policy=StaticClip()))
    grads = params([3, 4])
    result = clipper.step(0, grads)
    assert result["total_norm"] == 5.0
    assert result["action"] == "ACTION_CLIP"
    assert result["reason"] == "REASON_ABOVE_MAX_NORM"
    assert result["reason_detail"] == "norm 5 > max_norm 1 (static)"
    assert result["effective_max_norm"] == 1.0
    assert result["clip_coef"] == 1.0 / (5.0 + 1e-6)
    assert result["job_partial"] == 25.0 and not result["nonfinite"]
    assert l2(grads) == pytest.approx(1.0, rel=1e-6)

    grads = params([0.5])
    result = clipper.step(1, grads)
    assert result["action"] == "ACTION_NONE"
    assert result["reason"] == "REASON_WITHIN_MAX_NORM"
    assert result["reason_detail"] == "norm 0.5 <= max_norm 1 (static)"
    assert result["clip_coef"] == 1.0
    assert grads[0].grad.tolist() == [0.5]


def test_autoclip_policy(coordinator):
    # The 50th percentile (nearest rank) of the last 3 finite totals, after
    # 3 warm-up steps at max_norm 100.
    clipper = job(coordinator, "py-autoclip", RunConfig(
        participants=1, max_norm=100.0,
        clip_policy=AutoClip(percentile=50, history_length=3, warmup_steps=3)))
    for step, value in enumerate([4.0, 1.0, 6.0]):
        result = clipper.step(step, norm_of(value))
        assert result["effective_max_norm"] == 100.0, step
        assert result["action"] == "ACTION_NONE", step
    # History [4, 1, 6]: rank ceil(0.5 * 3) = 2 of [1, 4, 6] is 4.
    grads = norm_of(8.0)
    result = clipper.step(3, grads)
    assert result["effective_max_norm"] == 4.0
    assert result["action"] == "ACTION_CLIP"
    assert result["reason_detail"] == "norm 8 > max_norm 4 (autoclip)"
    assert result["clip_coef"] == 4.0 / (8.0 + 1e-6)
    assert grads[0].grad.item() == pytest.approx(4.0, rel=1e-6)
    # History [1, 6, 8] (4 fell out of the 3 kept): rank 2 is 6 (with 4
    # still in it would be 4).
    result = clipper.step(4, norm_of(2.0))
    assert result["effective_max_norm"] == 6.0
    assert result["action"] == "ACTION_NONE"


def test_zclip_policy(coordinator):
    clipper = job(coordinator, "py-zclip", RunConfig(
        participants=1, max_norm=100.0,
        clip_policy=ZClip(alpha=0.5, z_threshold=1.0, warmup_steps=2)))
    for step, value in enumerate([1.0, 3.0]):
        result = clipper.step(step, norm_of(value))
        assert result["effective_max_norm"] == 100.0, step
        assert result["action"] == "ACTION_NONE", step
    # Warm-up [1, 3]: mean 2, variance 1, so the threshold is 2 + 1 * 1.
    grads = norm_of(5.0)
    result = clipper.step(2, grads)
    assert result["effective_max_norm"] == 3.0
    assert result["action"] == "ACTION_CLIP"
    assert result["reason"] == "REASON_ABOVE_MAX_NORM"
    assert result["reason_detail"] == "norm 5 > max_norm 3 (zclip)"
    assert result["clip_coef"] == 3.0 / (5.0 + 1e-6)
    assert grads[0].grad.item() == pytest.approx(3.0, rel=1e-6)
    # The EMA takes the clipped 3: mean 0.5 * 2 + 0.5 * 3 = 2.5, variance
    # 0.5 * 1 + 0.5 * (3 - 2.5)^2 = 0.625.
    result = clipper.step(3, norm_of(1.0))
    assert result["effective_max_norm"] == pytest.approx(
        2.5 + math.sqrt(0.625), rel=1e-15)
    assert result["action"] == "ACTION_NONE"


def test_spike_rule(coordinator):
    clipper = job(coordinator, "py-spike", RunConfig(
        participants=1, max_norm=100.0,
        spike_rule=SpikeRule(sigma=2.0, window=8, warmup_steps=4)))
    # Before the window holds 4 totals nothing is a spike.
    for step, value in enumerate([1.0, 3.0, 1.0, 3.0]):
        assert clipper.step(step, norm_of(value))["action"] == "ACTION_NONE"
    # Window [1, 3, 1, 3]: mean 2, std 1, threshold 2 + 2 * 1 = 4.
    grads = norm_of(10.0)
    result = clipper.step(4, grads)
    assert result["action"] == "ACTION_SKIP"
    assert result["reason"] == "REASON_SPIKE"
    assert result["reason_detail"] == (
        "norm 10 > spike threshold 4 = mean 2 + 2 * std 1 of the last 4 "
        "steps: step skipped")
    assert result["clip_coef"] == 1.0 and not result["nonfinite"]
    assert grads[0].grad.tolist() == [10.0]  # skipped, not clipped
    # The spike entered the window as the threshold 4: [1, 3, 1, 3, 4] has
    # mean 2.4 and std 1.2, threshold 4.8, so 4.5 is no spike (it would be
    # against the old threshold 4).
    result = clipper.step(5, norm_of(4.5))
    assert result["action"] == "ACTION_NONE"


def test_nonfinite_policy_error(coordinator):
    clipper = job(coordinator, "py-nonfinite-error", RunConfig(
        participants=1, max_norm=1.0, nonfinite="error"))
    grads = params([math.nan, 4.0])
    with pytest.raises(gradnorm.Error) as info:
        clipper.step(0, grads)
    assert info.value.code == "FAILED_PRECONDITION"
    assert "NON_FINITE_POLICY_ERROR" in info.value.message
    assert grads[0].grad[1].item() == 4.0
    # The run goes on with finite steps.
    result = clipper.step(1, norm_of(0.5))
    assert result["action"] == "ACTION_NONE" and result["total_norm"] == 0.5


def test_nonfinite_policy_skip(coordinator):
    clipper = job(coordinator, "py-nonfinite-skip", RunConfig(
        participants=1, max_norm=1.0, nonfinite="skip"))
    for step, bad in enumerate([math.nan, math.inf]):
        grads = params([bad, 4.0])
        result = clipper.step(step, grads)
        assert result["action"] == "ACTION_SKIP", bad
        assert result["reason"] == "REASON_NONFINITE", bad
        assert result["nonfinite"], bad
        assert (math.isnan(result["total_norm"]) if math.isnan(bad)
                else result["total_norm"] == math.inf)
        assert grads[0].grad[1].item() == 4.0


def test_round_timeout(coordinator):
    # Two participants, only one reports: the round is abandoned after the
    # run's 300 ms, long before the report's own 10 s deadline.
    clipper = job(coordinator, "py-round-timeout", RunConfig(
        participants=2, max_norm=1.0, round_timeout_ms=300))
    grads = params([3, 4])
    start = time.monotonic()
    with pytest.raises(gradnorm.Error) as info:
        clipper.step(0, grads)
    elapsed = time.monotonic() - start
    assert info.value.code == "ABORTED"
    assert "timed out after 300 ms waiting for participants 1" in (
        info.value.message)
    assert 0.25 <= elapsed < 5.0, elapsed
    assert grads[0].grad.tolist() == [3.0, 4.0]


def test_config_norm_type_must_be_the_clippers(coordinator):
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match="run config norm_type 1 differs from the "
                       "clipper's norm_type 2"):
        gn.Clipper(norm_type=2, address=coordinator, run_id="py-norm-type",
                   config=RunConfig(participants=1, norm_type=1.0))


# --- gradnorm.coordinator.CoordinatorClient ------------------------------------

def test_client_registers_and_describes_runs(coordinator):
    client = CoordinatorClient(coordinator)
    config = RunConfig(participants=2, max_norm=2.0,
                       clip_policy=ZClip(z_threshold=1.5),
                       spike_rule=SpikeRule(sigma=4.0, window=32),
                       nonfinite="error", round_timeout_ms=5000)
    registered = client.register_run("py-client-zclip", config)
    assert registered["created"] is True
    run = registered["run"]
    assert run["run_id"] == "py-client-zclip"
    # The stored config: ours, with the proto's defaults filled in.
    assert run["config"] == {
        "norm_type": 2, "max_norm": 2, "participants": 2,
        "clip_policy": {"zclip": {"alpha": 0.97, "z_threshold": 1.5,
                                  "warmup_steps": 25}},
        "spike_rule": {"enabled": True, "sigma": 4, "window": 32,
                       "warmup_steps": 16},
        "nonfinite_policy": "NON_FINITE_POLICY_ERROR",
        "round_timeout_ms": "5000", "inexact": False}
    assert run["rounds"] == "0" and run["open_rounds"] == 0

    again = client.register_run("py-client-zclip", config)
    assert again["created"] is False
    assert again["run"]["config"] == run["config"]
    with pytest.raises(gradnorm.Error, match="already registered with a "
                       r"different config .*max_norm: 2 -> 3") as info:
        client.register_run("py-client-zclip", RunConfig(
            participants=2, max_norm=3.0, clip_policy=ZClip(z_threshold=1.5),
            spike_rule=SpikeRule(sigma=4.0, window=32), nonfinite="error",
            round_timeout_ms=5000))
    assert info.value.code == "FAILED_PRECONDITION"

    got = client.get_run("py-client-zclip")
    assert got["config"]["clip_policy"]["zclip"]["z_threshold"] == 1.5
    assert got["config"] == run["config"]
    assert got["created_unix_micros"] == run["created_unix_micros"]

    runs = client.list_runs()
    ids = [r["run_id"] for r in runs]
    assert "py-client-zclip" in ids and ids == sorted(ids)
    assert [r["config"] for r in runs if r["run_id"] == "py-client-zclip"] == [
        run["config"]]


def test_client_rejects_bad_configs(coordinator):
    client = CoordinatorClient(coordinator)
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match=r"field clip_policy.zclip.alpha is 1.5; expected "
                       r"a smoothing factor in \(0, 1\)"):
        client.register_run("py-bad", RunConfig(participants=1,
                                                clip_policy=ZClip(alpha=1.5)))
    with pytest.raises(gradnorm.InvalidArgumentError,
                       match="field max_norm is 0; expected > 0 with an "
                       "adaptive clip policy"):
        client.register_run("py-bad", RunConfig(participants=1, max_norm=0.0,
                                                clip_policy=AutoClip()))
    with pytest.raises(gradnorm.Error) as info:
        client.get_run("py-bad")
    assert info.value.code == "NOT_FOUND"


def test_client_history_and_summary(coordinator):
    clipper = job(coordinator, "py-history", RunConfig(participants=1,
                                                       max_norm=1.0))
    values = [0.5, 2.0, 0.25, math.nan, 4.0]  # 2 and 4 clipped, NaN skipped
    for step, value in enumerate(values):
        clipper.step(step, norm_of(value))
    client = CoordinatorClient(coordinator)
    run = client.get_run("py-history")
    assert run["rounds"] == "5" and run["last_step"] == "4"

    history = client.history("py-history")
    assert history["downsampled"] is False
    buckets = history["buckets"]
    assert [(b["first_step"], b["last_step"], b["rounds"]) for b in buckets] == [
        (str(s), str(s), 1) for s in range(5)]
    # proto3 JSON writes a NaN as the string "NaN".
    assert [b["last_norm"] for b in buckets] == [0.5, 2, 0.25, "NaN", 4]
    assert [b["clipped"] for b in buckets] == [0, 1, 0, 0, 1]
    assert [b["skipped"] for b in buckets] == [0, 0, 0, 1, 0]

    downsampled = client.history("py-history", max_points=2)
    assert downsampled["downsampled"] is True
    buckets = downsampled["buckets"]
    assert len(buckets) <= 2
    assert sum(b["rounds"] for b in buckets) == 5
    assert buckets[0]["first_step"] == "0" and buckets[-1]["last_step"] == "4"
    assert max(b["max_norm"] for b in buckets) == 4
    assert sum(b["clipped"] for b in buckets) == 2
    assert sum(b["skipped"] for b in buckets) == 1

    summary = client.summary("py-history")
    assert summary["rounds"] == "5"
    # Nearest-rank percentiles of the finite totals [0.25, 0.5, 2, 4].
    assert summary["p50_norm"] == 0.5 and summary["p90_norm"] == 4
    assert summary["min_norm"] == 0.25 and summary["max_norm"] == 4
    assert summary["mean_norm"] == 1.6875
    assert summary["clipped_fraction"] == 0.4
    assert summary["skipped_steps"] == ["3"] and summary["skipped_count"] == "1"
    assert [p["participant"] for p in summary["slowest_participants"]] == [0]

    part = client.summary("py-history", from_step=1, to_step=2)
    assert part["rounds"] == "2"
    assert part["min_norm"] == 0.25 and part["max_norm"] == 2
    assert part["clipped_fraction"] == 0.5 and part["skipped_count"] == "0"


def test_finish_and_delete_a_run(coordinator):
    clipper = job(coordinator, "py-finished", RunConfig(participants=1,
                                                        max_norm=1.0))
    first = clipper.step(0, norm_of(0.5))
    finished = clipper.finish()
    assert finished["run"]["finished"] is True
    assert finished["run"]["rounds"] == "1"
    assert clipper.finish()["run"]["finished_unix_micros"] == \
        finished["run"]["finished_unix_micros"]
    # A late step that was finalized keeps its answer; a new one is refused.
    assert clipper.step(0, norm_of(0.5))["total_norm"] == first["total_norm"]
    with pytest.raises(gradnorm.Error) as info:
        clipper.step(1, norm_of(0.5))
    assert info.value.code == "FAILED_PRECONDITION"
    assert "is finished" in info.value.message

    client = CoordinatorClient(coordinator)
    assert client.delete_run("py-finished") == 1
    with pytest.raises(gradnorm.Error) as info:
        client.get_run("py-finished")
    assert info.value.code == "NOT_FOUND"
    assert gn.Clipper(max_norm=1.0).finish() is None


def test_unknown_run_is_not_found(coordinator):
    client = CoordinatorClient(coordinator)
    for call in (lambda: client.get_run("py-no-such-run"),
                 lambda: client.history("py-no-such-run"),
                 lambda: client.summary("py-no-such-run")):
        with pytest.raises(gradnorm.Error) as info:
            call()
        assert info.value.code == "NOT_FOUND"
        assert "run py-no-such-run is not registered" in info.value.message
    # A clipper without a config needs the run to exist.
    with pytest.raises(gradnorm.Error,
                       match="the clipper registers the run only when") as info:
        gn.Clipper(address=coordinator, run_id="py-no-such-run",
                   report_timeout_s=10)
    assert info.value.code == "NOT_FOUND"


def exact_norm_oracle(values):
    """sqrt of the exact sum of squares, each rounding done once."""
    from fractions import Fraction
    total = sum((Fraction(v) ** 2 for v in values), Fraction(0))
    return math.sqrt(float(total))


def test_exact_total_is_the_same_bits_for_two_or_three_jobs(coordinator):
    torch.manual_seed(11)
    full = torch.cat([torch.randn(999) * 0.05, torch.tensor([6e31, 1e-30, 1.0])])
    expected = exact_norm_oracle(full.double().tolist())
    totals = {}
    for jobs in (2, 3):
        shards = full.tensor_split(jobs)
        results = [None] * jobs

        def run_job(i):
            clipper = gn.Clipper(norm_type=2, max_norm=1.0, address=coordinator,
                                 run_id=f"python-exact-{jobs}", participant=i,
                                 participants=jobs, report_timeout_s=20,
                                 exact=True)
            parameter = torch.nn.Parameter(torch.zeros_like(shards[i]))
            parameter.grad = shards[i].clone()
            results[i] = clipper.step(0, [parameter])

        threads = [threading.Thread(target=run_job, args=(i,)) for i in range(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert all(r is not None for r in results)
        assert len({r["total_norm"] for r in results}) == 1
        totals[jobs] = results[0]["total_norm"]
    assert totals[2] == totals[3] == expected


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_coordinator(binary, port, db):
    """A coordinator process on 127.0.0.1:`port` with the SQLite file `db`,
    once it serves."""
    port_file = f"{db}.{port}.port"
    proc = subprocess.Popen([binary, f"--listen=127.0.0.1:{port}",
                             f"--db={db}", f"--port_file={port_file}"],
                            stdout=subprocess.DEVNULL)
    for _ in range(400):
        if os.path.exists(port_file):
            return proc
        assert proc.poll() is None, "the coordinator exited"
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the coordinator wrote no port")


def test_clipper_moves_to_the_coordinator_serving_next(coordinator_binary):
    """Two jobs whose address lists two coordinator ports (an active one and
    where its successor comes up, as with --postgres_standby). The first is
    killed (SIGKILL) after step 4 and the second starts 0.7 s later on the
    same database: the jobs carry on to step 9 without an error, agree on
    every step, and the second coordinator holds all ten rounds."""
    steps, kill_after = 10, 5
    ports = [free_port(), free_port()]
    address = f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    results = [[None] * steps for _ in range(2)]
    errors = []
    first_half_done = threading.Barrier(3)
    killed = threading.Event()

    def run_job(i):
        try:
            clipper = gn.Clipper(norm_type=2, max_norm=1.0, address=address,
                                 run_id="py-moving", participant=i,
                                 participants=2, report_timeout_s=30)
            for step in range(steps):
                if step == kill_after:
                    first_half_done.wait(timeout=60)
                    killed.wait(timeout=60)
                grads = params([3.0 + step, 4.0 * i], [1.0, 2.0])
                results[i][step] = clipper.step(step, grads)
        except Exception as e:  # reported below, with the step reached
            errors.append(f"job {i}: {e!r}")
            first_half_done.abort()

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "gradnorm.db")
        first = start_coordinator(coordinator_binary, ports[0], db)
        second = None
        try:
            jobs = [threading.Thread(target=run_job, args=(i,))
                    for i in range(2)]
            for t in jobs:
                t.start()
            first_half_done.wait(timeout=60)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            killed.set()
            time.sleep(0.7)  # the jobs' reports of step 5 fail and retry
            second = start_coordinator(coordinator_binary, ports[1], db)
            for t in jobs:
                t.join(timeout=60)
            assert errors == []
            client = CoordinatorClient(address)
            run = client.get_run("py-moving")
            client.close()
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
    for step in range(steps):
        a, b = results[0][step], results[1][step]
        assert a is not None and b is not None, step
        for key in ("total_norm", "clip_coef", "action", "reason", "exact"):
            assert a[key] == b[key], (step, key)
        expected = math.sqrt(2 * (3.0 + step) ** 2 + 26)
        assert a["total_norm"] == pytest.approx(expected, rel=1e-15), step
    assert run["rounds"] == str(steps) and run["last_step"] == str(steps - 1)
