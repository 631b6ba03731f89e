"""The coordinator's dashboard in a real browser (headless Chromium driven by
Selenium): a real coordinator, a two-job run with a spike and a NaN step
reported through the Python Clipper, and the page as a person sees it.

Screenshots (PNG) go to $TEST_UNDECLARED_OUTPUTS_DIR (else the temp dir).
"""

import html
import json
import math
import os
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

import gradnorm.torch as gn
from gradnorm import config as gc
from local_dashboard import LocalCoordinator, headless_chromium

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

STEPS = 600
SPIKE_STEP = 400
NAN_STEP = 250
MAX_NORM = 22.0
RUN = "browser-demo"

OUTPUTS = os.environ.get("TEST_UNDECLARED_OUTPUTS_DIR") or tempfile.gettempdir()


def shot(driver, name):
    path = os.path.join(OUTPUTS, name)
    driver.save_screenshot(path)
    return path


@pytest.fixture(scope="module")
def coordinator_binary():
    path = os.environ.get("GRADNORM_COORDINATOR", "")
    assert os.access(path, os.X_OK), f"no coordinator binary at {path!r}"
    return path


@pytest.fixture(scope="module")
def coordinator(coordinator_binary):
    """A coordinator with a token per role and its HTTP port."""
    with LocalCoordinator(coordinator_binary) as c:
        yield {"target": c.target, "url": c.url, "trainer": c.trainer,
               "viewer": c.viewer}


def gradients(job, step):
    """Job `job`'s gradient at `step`: about 20 in total norm, a spike of
    ~100x at SPIKE_STEP, NaN at NAN_STEP (job 1 only)."""
    g = torch.Generator().manual_seed(1000 * step + job)
    grad = torch.randn(64, generator=g) * (20.0 / math.sqrt(128)) * (1 + 0.3 * math.sin(step / 40))
    if step == SPIKE_STEP:
        grad *= 100
    if step == NAN_STEP and job == 1:
        grad[3] = float("nan")
    p = torch.nn.Parameter(torch.zeros(64))
    p.grad = grad
    return [p]


class Jobs:
    """The run's two jobs, one Clipper each, stepping together."""

    def __init__(self, coordinator):
        config = gc.RunConfig(participants=2, max_norm=MAX_NORM,
                              spike_rule=gc.SpikeRule(sigma=6.0),
                              nonfinite="skip", round_timeout_ms=20000)
        self.clippers = [
            gn.Clipper(address=coordinator["target"], run_id=RUN, participant=j,
                       config=config, token=coordinator["trainer"],
                       report_timeout_s=30)
            for j in range(2)]

    def run(self, steps):
        errors = []

        def job(j):
            try:
                for step in steps:
                    self.clippers[j].step(step, gradients(j, step))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=job, args=(j,)) for j in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors


@pytest.fixture(scope="module")
def run(coordinator):
    jobs = Jobs(coordinator)
    jobs.run(range(STEPS))
    return jobs


def api(coordinator, path):
    request = urllib.request.Request(
        coordinator["url"] + path,
        headers={"Authorization": "Bearer " + coordinator["viewer"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def browser():
    driver = headless_chromium(tempfile.mkdtemp(prefix="chromium-"))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_with_token(driver, coordinator, token, hash_=""):
    driver.get(coordinator["url"] + "/" + hash_)
    form = WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, "token-form"))
    assert form.is_displayed(), "the page did not ask for a token"
    driver.find_element(By.ID, "token").send_keys(token)
    form.find_element(By.TAG_NAME, "button").click()


def dashboard_state(driver):
    """What the page's chart shows: its query and each dataset's points."""
    return driver.execute_script("""
        const s = window.gradnormDashboard;
        if (!s.chart || !s.query) return null;
        return {query: s.query, lastStep: s.lastStep,
                datasets: s.chart.data.datasets.map(d => ({
                    label: d.label,
                    points: d.data.map(p => [p.x, p.y])}))};""")


def wait_chart(driver, predicate=lambda s: True, timeout_s=10):
    return WebDriverWait(driver, timeout_s).until(
        lambda d: (lambda s: s if s and predicate(s) else None)(dashboard_state(d)))


def dataset(state, label):
    for d in state["datasets"]:
        if d["label"] == label:
            return d["points"]
    raise AssertionError(f"no dataset {label!r} in {[d['label'] for d in state['datasets']]}")


def finite(v):
    if isinstance(v, str):
        v = float(v)
    return v if v is not None and math.isfinite(v) else None


def history_of(coordinator, query):
    return api(coordinator, f"/api/v1/runs/{RUN}/history?from={query['from']}"
                            f"&to={query['to']}&buckets={query['buckets']}")["buckets"]


def assert_chart_matches(state, buckets):
    assert len(buckets) > 0
    xs = [b["last_step"] for b in buckets]
    for label, field in [("min", "min_norm"), ("min\u2013max", "max_norm"),
                         ("mean", "mean_norm"),
                         ("threshold in force", "effective_max_norm")]:
        points = dataset(state, label)
        assert [p[0] for p in points] == xs, label
        assert [p[1] for p in points] == [finite(b[field]) for b in buckets], label


def gradnormctl():
    root = os.path.join(os.environ.get("TEST_SRCDIR", ""),
                        os.environ.get("TEST_WORKSPACE", "gradnorm"))
    return os.path.join(root, "tools", "gradnormctl", "gradnormctl")


def test_the_terminal_plot_marks_the_spike_and_the_skips(coordinator, run, browser):
    with tempfile.NamedTemporaryFile("w", suffix=".token", delete=False) as f:
        f.write(coordinator["viewer"] + "\n")
    out = subprocess.run(
        [gradnormctl(), "plot", RUN, "--target=" + coordinator["target"],
         "--token_file=" + f.name, "--width=100", "--height=18"],
        capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    plot = out.stdout
    assert RUN in plot
    lines = plot.splitlines()
    # The spike's total tops the chart, and the marker row shows both skips.
    spike = api(coordinator, f"/api/v1/runs/{RUN}/rounds?from={SPIKE_STEP}&limit=1")["rounds"][0]
    top = float(lines[1].split()[0])
    assert abs(top - spike["total_norm"]) < 0.01 * spike["total_norm"], plot
    markers = next(line for line in lines if "C" in line and "step" not in line)
    assert markers.count("S") == 2, plot
    assert "S skipped" in plot and "C clipped" in plot
    # A picture of it, as a terminal shows it.
    page = ("<html><body style='margin:0;background:#1d2330'>"
            "<pre style='color:#e8e8e8;font:14px/1.25 DejaVu Sans Mono,monospace;"
            "padding:12px;margin:0'>" + html.escape(plot) + "</pre></body></html>")
    page_file = os.path.join(tempfile.mkdtemp(), "plot.html")
    with open(page_file, "w", encoding="utf-8") as f:
        f.write(page)
    browser.set_window_size(1000, 520)
    browser.get("file://" + page_file)
    shot(browser, "terminal_plot.png")


def test_a_wrong_token_shows_an_error_not_an_empty_chart(coordinator, run, browser):
    open_with_token(browser, coordinator, "wrong-token-0123456789abcdef")
    error = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").is_displayed() else None)
    assert "refused the token" in error.text
    assert "UNAUTHENTICATED" in error.text
    assert not browser.find_element(By.ID, "main").is_displayed()
    assert not browser.find_element(By.ID, "chart").is_displayed()
    shot(browser, "dashboard_wrong_token.png")


def test_the_dashboard_shows_the_run_as_the_api_does(coordinator, run, browser):
    open_with_token(browser, coordinator, coordinator["viewer"])
    # The run is listed, with its last step and last norm.
    row = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{RUN}"]'))
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0] == RUN and cells[2] == str(STEPS - 1), cells
    row.click()
    state = wait_chart(browser)
    # 600 rounds on a chart of about 450 buckets: downsampled by the server
    # to buckets of 2 steps.
    query = state["query"]
    assert query["from"] == 0 and query["to"] == 0 and query["buckets"] < STEPS
    buckets = history_of(coordinator, query)
    assert len(buckets) <= query["buckets"]
    assert max(b["rounds"] for b in buckets) > 1
    assert_chart_matches(state, buckets)

    # The spike is the maximum of its bucket, and marked SKIP (spike) there.
    spike_round = api(coordinator, f"/api/v1/runs/{RUN}/rounds?from={SPIKE_STEP}&limit=1")["rounds"][0]
    assert spike_round["action"] == "ACTION_SKIP" and spike_round["reason"] == "REASON_SPIKE"
    spike_bucket = next(b for b in buckets if b["first_step"] <= SPIKE_STEP <= b["last_step"])
    assert spike_bucket["rounds"] > 1
    assert spike_bucket["max_norm"] == spike_round["total_norm"]
    assert [spike_bucket["last_step"], spike_round["total_norm"]] in dataset(state, "SKIP (spike)")
    chart_max = max(p[1] for p in dataset(state, "min\u2013max") if p[1] is not None)
    assert chart_max == spike_round["total_norm"]

    # The NaN step is marked SKIP (NaN/Inf), at its bucket.
    nan_round = api(coordinator, f"/api/v1/runs/{RUN}/rounds?from={NAN_STEP}&limit=1")["rounds"][0]
    assert nan_round["reason"] == "REASON_NONFINITE"
    nan_bucket = next(b for b in buckets if b["first_step"] <= NAN_STEP <= b["last_step"])
    assert [p[0] for p in dataset(state, "SKIP (NaN/Inf)")] == [nan_bucket["last_step"]]
    assert [p[0] for p in dataset(state, "SKIP (spike)")] == [spike_bucket["last_step"]]
    clip_steps = {b["last_step"] for b in buckets if b["clipped"] > 0}
    assert {p[0] for p in dataset(state, "CLIP")} == clip_steps and clip_steps

    # The summary panel: the API's percentiles and skipped count.
    summary = api(coordinator, f"/api/v1/runs/{RUN}/summary?top=5")
    table = browser.find_element(By.ID, "summary-table").text
    assert f"rounds {STEPS}" in table
    assert "skipped 2 (steps %d, %d)" % (NAN_STEP, SPIKE_STEP) in table
    slowest = browser.find_element(By.ID, "slowest-table").text
    for lag in summary["slowest_participants"]:
        assert f"{lag['participant']} {lag['times_slowest']}" in slowest
    shot(browser, "dashboard.png")

    # Zoom to steps 380..420: the server buckets that range again, one
    # round each; the spike is its own point.
    browser.find_element(By.ID, "from").clear()
    browser.find_element(By.ID, "from").send_keys("380")
    browser.find_element(By.ID, "to").send_keys("420")
    browser.find_element(By.ID, "zoom").click()
    zoomed = wait_chart(browser, lambda s: s["query"]["from"] == 380)
    assert zoomed["query"]["to"] == 420
    zoomed_buckets = history_of(coordinator, zoomed["query"])
    assert len(zoomed_buckets) == 41
    assert_chart_matches(zoomed, zoomed_buckets)
    assert dataset(zoomed, "SKIP (spike)") == [[SPIKE_STEP, spike_round["total_norm"]]]
    shot(browser, "dashboard_zoomed.png")

    # The token is kept for the tab: a reload does not ask again.
    browser.refresh()
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{RUN}"]'))
    assert not browser.find_element(By.ID, "token-form").is_displayed()


def test_a_new_round_appears_without_reloading(coordinator, run, browser):
    open_with_token(browser, coordinator, coordinator["viewer"], "#run=" + RUN)
    wait_chart(browser, lambda s: s["lastStep"] == STEPS - 1)
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "live").is_displayed())
    browser.execute_script("window.gradnormMarker = 'same page';")
    run.run([STEPS])  # One more round, reported by both jobs.
    reported = time.monotonic()
    wait_chart(browser, lambda s: any(
        p[0] == STEPS for p in dataset(s, "mean")), timeout_s=2)
    latency = time.monotonic() - reported
    assert latency < 2.0
    assert browser.execute_script("return window.gradnormMarker") == "same page"
    row = browser.find_element(By.CSS_SELECTOR, f'#runs tr[data-run="{RUN}"]')
    assert row.find_elements(By.TAG_NAME, "td")[2].text == str(STEPS)
    with open(os.path.join(OUTPUTS, "live_latency.txt"), "w") as f:
        f.write(f"new round on the page {latency * 1000:.0f} ms after its report\n")
    shot(browser, "dashboard_live.png")
