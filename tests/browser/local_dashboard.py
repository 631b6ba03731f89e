"""What the dashboard's browser test and its load benchmark share: a real
coordinator with a token per role and its HTTP port, and headless Chromium.

    with LocalCoordinator(binary) as c:   # c.target, c.url, c.trainer, c.viewer
        driver = headless_chromium(profile_dir)
"""

import os
import secrets
import shutil
import subprocess
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service


class LocalCoordinator:
    """A coordinator process on loopback ports it picks, SQLite in a fresh
    directory (`dir`), a trainer and a viewer token (also in
    dir/trainer.token and dir/viewer.token). Stopped (SIGTERM) on exit."""

    def __init__(self, binary, extra_flags=()):
        self.dir = tempfile.mkdtemp(prefix="gradnorm-dashboard-")
        self.trainer = "trainer-" + secrets.token_hex(16)
        self.viewer = "viewer-" + secrets.token_hex(16)
        for name, text in [("tokens", f"{self.trainer} trainer\n{self.viewer} viewer\n"),
                           ("trainer.token", self.trainer + "\n"),
                           ("viewer.token", self.viewer + "\n")]:
            path = os.path.join(self.dir, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o600)
        self._log = open(os.path.join(self.dir, "coordinator.log"), "w")
        self.process = subprocess.Popen(
            [binary, "--listen=127.0.0.1:0", f"--port_file={self.dir}/port",
             "--http_listen=127.0.0.1:0", f"--http_port_file={self.dir}/http.port",
             f"--tokens_file={self.dir}/tokens", f"--db={self.dir}/gradnorm.db",
             *extra_flags],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.target = "127.0.0.1:" + self._port("port")
            self.url = "http://127.0.0.1:" + self._port("http.port")
        except Exception:
            self.stop()
            raise

    def _port(self, name, timeout_s=20):
        path = os.path.join(self.dir, name)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path) as f:
                    text = f.read().strip()
                if text:
                    return text
            if self.process.poll() is not None:
                raise RuntimeError(f"the coordinator exited before writing {name}:\n"
                                   + open(os.path.join(self.dir, "coordinator.log")).read())
            time.sleep(0.05)
        raise RuntimeError(f"the coordinator wrote no {name} in {timeout_s} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def headless_chromium(profile_dir, width=1400, height=1000):
    """Debian's Chromium through its chromedriver, headless, with a fresh
    profile in `profile_dir`."""
    options = Options()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", f"--window-size={width},{height}",
                f"--user-data-dir={profile_dir}"]:
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
