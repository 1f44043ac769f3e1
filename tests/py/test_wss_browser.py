"""`wss://` through a TLS-terminating wsdrain, with a real browser: headless Chromium's
WebSocket.

test_tls.py drains Python clients over TLS; this one checks that what a browser sees
inside TLS is the drain wsdrain promises. A page on loopback opens SOCKETS WebSockets to
`wss://127.0.0.1:PORT/` (wsdrain with a throwaway certificate, which Chromium is told to
accept; the app is the Python echo app), echoes one message on each, and reports back.
The pod then gets SIGTERM. Checked, per socket: the close event came with code 1012, a
reason holding a `reconnect_after_ms` hint within [0, --reconnect-jitter], and
`wasClean` true (the close handshake completed inside TLS); the closes were staggered
over the window; the pod exited 0.

Skipped when no chromium / chromium-browser or no openssl binary is installed.
"""

import json
import shutil
import signal
import subprocess
import sys

import pytest

from browser import PageServer, chromium, chromium_log, find_chromium, stop_group  # noqa: E402
from conftest import ROOT, start_wsdrain  # noqa: E402

sys.path.insert(0, str(ROOT / "clients" / "python"))
from wsdrain_hint import parse_hint  # noqa: E402

SOCKETS = 24
WINDOW_MS = 3000
JITTER_MS = 2000
FLAGS = ["--drain-delay", "0s", "--drain-window", f"{WINDOW_MS // 1000}s",
         "--reconnect-jitter", f"{JITTER_MS // 1000}s", "--close-timeout", "5s"]

PAGE = """<!doctype html><meta charset=utf-8><title>wsdrain wss</title><script>
const sockets = [];
for (let i = 0; i < %(n)d; i++) {
  const s = {echoed: false, code: null, reason: null, clean: null, closedAt: null};
  const ws = new WebSocket("wss://127.0.0.1:%(port)d/page-" + i);
  ws.onopen = () => ws.send("hello " + i);
  ws.onmessage = (e) => { if (e.data === "hello " + i) s.echoed = true; };
  ws.onclose = (e) => {
    s.code = e.code; s.reason = e.reason; s.clean = e.wasClean; s.closedAt = performance.now();
  };
  sockets.push(s);
}
setInterval(() => fetch("/report", {method: "POST", body: JSON.stringify(sockets)}), 200);
</script>"""


def make_cert(directory) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
                   check=True, capture_output=True)


def test_chromium_over_wss_gets_1012_with_a_hint_and_a_clean_close(tmp_path, echo_app):
    binary = find_chromium()
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl): no test certificate")
    make_cert(tmp_path)
    pod, listen, _ = start_wsdrain(echo_app, "--tls-dir", str(tmp_path), *FLAGS)
    page, browser = None, None
    log = open(tmp_path / "chromium.log", "wb")
    try:
        page = PageServer(PAGE % {"n": SOCKETS, "port": listen})
        url = f"http://127.0.0.1:{page.server_address[1]}/"
        browser = chromium(binary, url, tmp_path / "profile", log,
                           ["--ignore-certificate-errors"])
        report = page.wait(lambda r: all(s["echoed"] for s in r), 60)
        assert report and all(s["echoed"] for s in report), \
            f"not every socket echoed over wss: {report}; chromium log: {chromium_log(tmp_path)}"
        pod.p.send_signal(signal.SIGTERM)
        report = page.wait(lambda r: all(s["code"] is not None for s in r),
                           (WINDOW_MS + 5000) / 1000 + 30)
        pod.p.wait(30)
        assert pod.p.returncode == 0
    finally:
        if browser:
            stop_group(browser)
        log.close()
        if page:
            page.shutdown()
        pod.stop(signal.SIGQUIT)

    assert len(report) == SOCKETS
    for i, s in enumerate(report):
        hint = parse_hint(s["reason"])
        assert s["code"] == 1012, f"socket {i}: {json.dumps(s)}"
        assert hint is not None and 0 <= hint <= JITTER_MS, f"socket {i}: reason {s['reason']!r}"
        assert s["clean"] is True, f"socket {i}: the close was not clean: {json.dumps(s)}"
    closed = sorted(s["closedAt"] for s in report)
    spread = closed[-1] - closed[0]
    print(f"\n{SOCKETS} Chromium WebSockets over wss: 1012 + hint, clean, closes spread over "
          f"{spread:.0f} ms (window {WINDOW_MS} ms)")
    assert spread >= WINDOW_MS / 2, f"closes not staggered: spread {spread:.0f} ms"
