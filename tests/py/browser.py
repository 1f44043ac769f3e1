"""Headless Chromium for the browser tests: a page server on loopback that keeps what the
page reports back, and launching and stopping the browser (all its processes)."""

import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest


class PageServer(http.server.ThreadingHTTPServer):
    """Serves the page on 127.0.0.1 and keeps the last report it POSTs back."""

    def __init__(self, page: str):
        self.page, self.report = page.encode(), None

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(h):
                h.send_response(200 if h.path == "/" else 404)
                h.send_header("Content-Type", "text/html")
                h.send_header("Content-Length", str(len(self.page)))
                h.end_headers()
                h.wfile.write(self.page)

            def do_POST(h):
                self.report = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
                h.send_response(204)
                h.end_headers()

            def log_message(h, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def wait(self, done, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.report and done(self.report):
                return self.report
            time.sleep(0.1)
        return self.report


def find_chromium() -> str:
    """The Chromium binary; skips the test with the reason when there is none."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/apt-packages.txt)")
    return binary


def chromium(binary: str, url: str, profile, log, extra=()) -> subprocess.Popen:
    """Headless Chromium on `url`, in a process group of its own (see `stop_group`)."""
    return subprocess.Popen([
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
        *extra, "--enable-logging=stderr",
        "--no-proxy-server", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
        "--disable-dev-shm-usage", url,
    ], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def chromium_log(tmp_path) -> str:
    """The end of the log `chromium` wrote to tmp_path/chromium.log, for failure messages."""
    return (tmp_path / "chromium.log").read_text(errors="replace")[-2000:]


def stop_group(p: subprocess.Popen) -> None:
    """Stops a browser and every process it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if p.poll() is not None:
            return
        os.killpg(p.pid, sig)
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
