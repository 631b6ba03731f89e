"""Round latency of 32 jobs reporting at full speed, with and without a
dashboard open on their run, and how the open dashboard keeps up.

A real coordinator (SQLite, tokens, HTTP port), //tests:round_load as the 32
jobs, headless Chromium (Selenium) as the person watching. Phases alternate
without / with the dashboard, twice each, so both see the same machine. For
each phase: rounds/s and job 0's round latency (p50/p90/p99); with the
dashboard also how far its last step trails the coordinator's, and how long
the page takes to answer a script call (its main thread's responsiveness).

    bazel build //server:coordinator //tests:round_load
    /usr/bin/python3 tests/browser/dashboard_load_benchmark.py [--seconds=10]
"""

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from local_dashboard import LocalCoordinator, headless_chromium

RUN = "load"


def cpu_seconds(pids):
    """User + system CPU seconds of the processes `pids` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass  # Gone meanwhile.
    return total / ticks


def pids_with(text):
    """Processes whose command line holds `text`."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(name))
            except OSError:
                pass
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="bazel-bin")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=32)
    args = parser.parse_args()

    coordinator = LocalCoordinator(os.path.join(args.bin, "server/coordinator"),
                                   ["--log_level=warning"])
    tmp = coordinator.dir
    viewer = coordinator.viewer
    driver = None
    try:
        target, url = coordinator.target, coordinator.url
        next_step = 0

        def load():
            nonlocal next_step
            out = subprocess.run(
                [os.path.join(args.bin, "tests/round_load"), f"--target={target}",
                 f"--token_file={tmp}/trainer.token", f"--run_id={RUN}",
                 f"--jobs={args.jobs}", f"--seconds={args.seconds}",
                 f"--first_step={next_step}"],
                check=True, capture_output=True, text=True, timeout=args.seconds + 120)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            next_step = result["last_step"] + 1
            return result

        def coordinator_last_step():
            request = urllib.request.Request(
                f"{url}/api/v1/runs/{RUN}", headers={"Authorization": "Bearer " + viewer})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())["run"]["last_step"]

        load()  # Registers the run; warms up.

        driver = headless_chromium(f"{tmp}/chromium")

        def open_dashboard():
            driver.get(f"{url}/#run={RUN}")
            WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "token-form").is_displayed()
                                            or d.find_element(By.ID, "main").is_displayed())
            if driver.find_element(By.ID, "token-form").is_displayed():
                driver.find_element(By.ID, "token").send_keys(viewer)
                driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
            WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "live").is_displayed())

        rows = []
        for phase in ["without", "with", "without", "with"]:
            samples = []
            if phase == "with":
                open_dashboard()
                stop = threading.Event()

                def watch():
                    while not stop.is_set():
                        t = time.monotonic()
                        page_step = driver.execute_script(
                            "return window.gradnormDashboard.lastStep")
                        script_ms = (time.monotonic() - t) * 1000
                        lag = coordinator_last_step() - (page_step or 0)
                        samples.append((script_ms, lag))
                        time.sleep(0.5)

                watcher = threading.Thread(target=watch)
                watcher.start()
            else:
                driver.get("about:blank")
            browser = pids_with(f"{tmp}/chromium")
            cpu_before = (cpu_seconds([coordinator.process.pid]), cpu_seconds(browser))
            result = load()
            result["coordinator_cpu_s"] = round(cpu_seconds([coordinator.process.pid]) - cpu_before[0], 2)
            result["browser_cpu_s"] = round(cpu_seconds(browser) - cpu_before[1], 2)
            if phase == "with":
                stop.set()
                watcher.join()
            row = dict(phase=phase, **result)
            if samples:
                row["page_script_ms_p50"] = statistics.median(s[0] for s in samples)
                row["page_script_ms_max"] = max(s[0] for s in samples)
                row["page_lag_steps_p50"] = statistics.median(s[1] for s in samples)
                row["page_lag_steps_max"] = max(s[1] for s in samples)
            rows.append(row)
            print(json.dumps(row), flush=True)

        def mean(phase, key):
            return statistics.mean(r[key] for r in rows if r["phase"] == phase)

        print(f"{args.jobs} jobs, {args.seconds} s per phase, two phases each:")
        for key in ["rounds_per_second", "p50_ms", "p90_ms", "p99_ms",
                    "coordinator_cpu_s", "browser_cpu_s"]:
            without, with_ = mean("without", key), mean("with", key)
            ratio = f"(with/without {with_ / without:.2f})" if without else ""
            print(f"  {key}: without dashboard {without:.3f}, with {with_:.3f} {ratio}")
    finally:
        if driver is not None:
            driver.quit()
        coordinator.stop()


if __name__ == "__main__":
    main()
