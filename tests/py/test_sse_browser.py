"""Server-Sent Events through a drain, with a real browser: headless Chromium's EventSource.

test_sse_drain.py drives the drain with an SSE client written for the test; this one
checks that what wsdrain sends is what a browser acts on. A page opens STREAMS
EventSources (each on its own host name, *.wsdrain.test mapped to 127.0.0.1, since
Chromium opens at most 6 HTTP/1.1 connections per host) through a TCP relay on loopback
that stands for the Service: it sends new connections to the pod (wsdrain in front of
tests/py/sse_app.py --cors) and, once the pod got SIGTERM, to the neighbour pod (a
second wsdrain in front of the same app), and it notes per connection when its request
came, its Last-Event-ID, the `retry:` the answer carried and when the answer ended.
Checked, per stream:

1. the pod's answer passed the app's `Access-Control-Allow-Origin` through, the page
   saw ids 1, 2, 3, … and the stream ended (EventSource `error`, readyState CONNECTING)
   with a `retry:` within [0, --reconnect-jitter];
2. Chromium came back after that hint: request at the neighbour - end of the pod's
   answer within [hint - 5 ms, hint + 1.5 s] (and so was the page's error -> open gap);
3. it came back with Last-Event-ID = the last id the page saw, and the neighbour's
   first event was the next id; the drained pod exited 0.

Skipped when no chromium / chromium-browser binary is installed (.ci/apt-packages.txt).
"""

import asyncio
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

from browser import PageServer, chromium, chromium_log, find_chromium, stop_group  # noqa: E402
from conftest import HERE, Proc, start_wsdrain  # noqa: E402
from loopback import free_port, wait_port  # noqa: E402

STREAMS = 24
JITTER_MS = 2000
EARLY_S = 0.005  # timer granularity
LATE_S = 1.5  # a loaded 2-core box
FLAGS = ["--drain-delay", "0s", "--drain-window", "4s",
         "--reconnect-jitter", f"{JITTER_MS // 1000}s", "--close-timeout", "5s"]

PAGE = """<!doctype html><meta charset=utf-8><title>wsdrain EventSource</title><script>
const streams = [];
for (let i = 0; i < %(n)d; i++) {
  const s = {ids: [], last: null, states: [], errorAt: null, gap: null, resumed: null};
  const es = new EventSource(`http://s${i}.wsdrain.test:%(port)d/sse?s=${i}`);
  es.onerror = () => { s.states.push(es.readyState); s.errorAt ??= performance.now(); };
  es.onopen = () => { if (s.errorAt !== null) s.gap ??= performance.now() - s.errorAt; };
  es.onmessage = (e) => {
    if (s.errorAt === null) { s.ids.push(Number(e.data)); s.last = e.lastEventId; }
    else if (s.resumed === null) { s.resumed = Number(e.data); es.close(); }
  };
  streams.push(s);
}
setInterval(() => fetch("/report", {method: "POST", body: JSON.stringify(streams)}), 300);
</script>"""


class Balancer:
    """The Service: a loopback TCP relay to `self.target`, one record per request."""

    def __init__(self, target: int):
        self.target = target
        self.port = free_port()
        self.conns = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self.loop).result(10)

    async def _listen(self):
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, creader, cwriter):
        try:
            head = await asyncio.wait_for(creader.readuntil(b"\r\n\r\n"), 60)
            c = {"at": time.monotonic(), "target": self.target, "retry": None, "ended": None}
            lines = head.decode("latin-1").split("\r\n")
            c["s"] = int(parse_qs(urlsplit(lines[0].split()[1]).query).get("s", ["-1"])[0])
            c["last_id"] = next((v.strip() for n, _, v in (h.partition(":") for h in lines[1:])
                                 if n.strip().lower() == "last-event-id"), None)
            self.conns.append(c)
            preader, pwriter = await asyncio.open_connection("127.0.0.1", c["target"])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                asyncio.TimeoutError):
            cwriter.close()
            return
        pwriter.write(head)
        up = asyncio.create_task(self._pump(creader, pwriter))
        answer = b""
        try:
            while data := await preader.read(65536):
                answer += data
                if c["ended"] is None and answer.endswith(b"\r\n0\r\n\r\n"):
                    c["ended"] = time.monotonic()  # the last chunk, before the browser has it
                cwriter.write(data)
                await cwriter.drain()
        except OSError:
            pass
        c["ended"] = c["ended"] or time.monotonic()
        c["head"] = answer.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
        if hints := re.findall(rb"retry: (\d+)\n", answer):
            c["retry"] = int(hints[-1])
        up.cancel()
        pwriter.close()
        cwriter.close()

    @staticmethod
    async def _pump(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        writer.close()

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_chromium_eventsource_reconnects_after_the_drain_hint(tmp_path):
    binary = find_chromium()
    app_port = free_port()
    app = Proc([sys.executable, str(HERE / "sse_app.py"), "--port", str(app_port),
                "--every", "0.2", "--cors"], stdout=subprocess.DEVNULL)
    procs, browser, lb, page = [], None, None, None
    log = open(tmp_path / "chromium.log", "wb")
    try:
        wait_port(app_port)
        pod, pod_listen, _ = start_wsdrain(app_port, *FLAGS)
        procs.append(pod)
        neighbour, neighbour_listen, _ = start_wsdrain(app_port, *FLAGS)
        procs.append(neighbour)
        lb = Balancer(pod_listen)
        page = PageServer(PAGE % {"n": STREAMS, "port": lb.port})
        url = f"http://127.0.0.1:{page.server_address[1]}/"
        browser = chromium(binary, url, tmp_path / "profile", log, [
            "--host-resolver-rules=MAP *.wsdrain.test 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"])

        def going(r):
            return all(len(s["ids"]) >= 2 for s in r)

        report = page.wait(going, 60)
        assert report and going(report), f"not every stream got going: " \
            f"{report and [len(s['ids']) for s in report]}; chromium log: {chromium_log(tmp_path)}"
        lb.target = neighbour_listen  # the endpoints move as the pod goes away
        pod.p.send_signal(signal.SIGTERM)
        report = page.wait(lambda r: all(s["resumed"] is not None for s in r), 4 + 2 + 60)
        pod.p.wait(30)
        assert pod.p.returncode == 0
    finally:
        if browser:
            stop_group(browser)
        log.close()
        for p in procs:
            p.stop(signal.SIGQUIT)
        if lb:
            lb.close()
        if page:
            page.shutdown()
        app.stop()

    late = []
    for i, s in enumerate(report):
        firsts = [c for c in lb.conns if c["s"] == i and c["target"] == pod_listen]
        seconds = [c for c in lb.conns if c["s"] == i and c["target"] == neighbour_listen]
        assert len(firsts) == 1 and len(seconds) == 1, \
            f"stream {i}: {len(firsts)} requests at the pod, {len(seconds)} at the neighbour; " \
            f"page {s}; chromium log: {chromium_log(tmp_path)}"
        first, second = firsts[0], seconds[0]
        assert "access-control-allow-origin: *" in first["head"], f"stream {i}: {first['head']}"
        assert s["ids"] == list(range(1, len(s["ids"]) + 1)), f"stream {i}: ids {s['ids']}"
        assert s["states"][:1] == [0], f"stream {i}: error with readyState {s['states']}"
        hint = first["retry"]
        assert hint is not None and 0 <= hint <= JITTER_MS, f"stream {i}: retry {hint}"
        delay = second["at"] - first["ended"]
        assert hint / 1000 - EARLY_S <= delay <= hint / 1000 + LATE_S, \
            f"stream {i}: Chromium came back {delay * 1000:.0f} ms after the end, hint {hint} ms"
        assert s["gap"] is not None and hint - EARLY_S * 1000 <= s["gap"] <= hint + LATE_S * 1000, \
            f"stream {i}: the page's error -> open took {s['gap']:.0f} ms, hint {hint} ms"
        assert second["last_id"] == s["last"] == str(s["ids"][-1]), \
            f"stream {i}: Last-Event-ID {second['last_id']!r}, last id seen {s['last']!r}"
        assert s["resumed"] == s["ids"][-1] + 1, \
            f"stream {i}: resumed at {s['resumed']} after {s['ids'][-1]}"
        late.append(delay * 1000 - hint)
    hints = [c["retry"] for c in lb.conns if c["target"] == pod_listen]
    print(f"\n{len(report)} Chromium EventSource streams: hints {min(hints)}-{max(hints)} ms, "
          f"reconnect - hint min/median/max {min(late):.1f}/{statistics.median(late):.1f}/"
          f"{max(late):.1f} ms")
    assert len(report) >= 20
