"""Shared fixtures: real processes on loopback ports — the Python echo app and wsdrain."""

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from loopback import free_port, wait_port  # noqa: F401  (re-exported to the tests)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def wsdrain_bin() -> str:
    path = os.environ.get("WSDRAIN_BIN") or str(ROOT / "target" / "debug" / "wsdrain")
    if not Path(path).exists():
        pytest.fail(f"wsdrain binary not found at {path}: run `cargo build` (scripts/test does)")
    return path


class Proc:
    """A child process that is always stopped at the end of the test."""

    def __init__(self, args, **kw):
        self.args = args
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


@pytest.fixture
def echo_app():
    """The Python `websockets` echo app (permessage-deflate on). Yields its port."""
    port = free_port()
    proc = Proc([sys.executable, str(HERE / "echo_server.py"), "--port", str(port)])
    try:
        wait_port(port)
        yield port
    finally:
        proc.stop()


def start_wsdrain(upstream_port: int, *extra: str) -> tuple:
    listen, admin = free_port(), free_port()
    proc = Proc([
        wsdrain_bin(), "proxy",
        "--listen", f"127.0.0.1:{listen}",
        "--upstream", f"127.0.0.1:{upstream_port}",
        "--admin", f"127.0.0.1:{admin}",
        "--log-level", "warn",
        *extra,
    ])
    wait_port(admin)
    wait_port(listen)
    return proc, listen, admin


@pytest.fixture
def wsdrain(echo_app):
    """wsdrain in front of the echo app. Yields (listen_port, admin_port)."""
    proc, listen, admin = start_wsdrain(echo_app)
    try:
        yield listen, admin
    finally:
        proc.stop(signal.SIGQUIT)  # close at once: no drain wait at teardown


def metrics(admin_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric(admin_port: int, series: str) -> float:
    for line in metrics(admin_port).splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def pytest_runtest_logreport(report):
    """Appends each skipped test and its reason to $WSDRAIN_SKIP_LOG, which
    scripts/test prints at the end of the run: a skip is never silent."""
    log = os.environ.get("WSDRAIN_SKIP_LOG")
    if not log or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    with open(log, "a") as f:
        f.write(f"{report.nodeid}: {reason.removeprefix('Skipped: ')}\n")
