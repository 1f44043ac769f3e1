"""The Python client helper (clients/python) and its reconnecting loop example, driven
through a real wsdrain drain into a neighbour pod; plus the README's "Honouring the hint"
snippets, which must be the very files the tests run."""

import asyncio
import json
import re
import signal
import sys
import time

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from conftest import ROOT, start_wsdrain
from loopback import free_port

sys.path[:0] = [str(ROOT / "clients" / "python"), str(ROOT / "clients" / "python" / "examples")]
from wsdrain_hint import HINT_MAX_MS, Reconnect, backoff_delay, parse_hint, reconnect_delay  # noqa: E402
from reconnecting_loop import follow  # noqa: E402

CLIENTS = 20
JITTER_MS = 1000
LATE_S = 0.100


def closed_with(reason):
    """A real ConnectionClosed as websockets raises it after receiving close 1012."""
    return ConnectionClosedError(Close(1012, reason), Close(1012, reason), True)


def test_reconnect_delay_reads_the_hint_and_falls_back_otherwise():
    assert reconnect_delay(closed_with('{"reconnect_after_ms":1234}'), 7.0) == 1.234
    assert reconnect_delay(closed_with('{"reconnect_after_ms":0}'), 7.0) == 0.0
    assert parse_hint(f'{{"reconnect_after_ms":{HINT_MAX_MS}}}') == HINT_MAX_MS
    for reason in ["", "going away", "{", '{"reconnect_after_ms":-1}', '{"reconnect_after_ms":1.5}',
                   '{"reconnect_after_ms":"100"}', '{"reconnect_after_ms":true}',
                   f'{{"reconnect_after_ms":{HINT_MAX_MS + 1}}}', '["reconnect_after_ms"]', "null"]:
        assert reconnect_delay(closed_with(reason), 7.0) == 7.0, reason
    # No close frame received at all (TCP reset): the fallback.
    assert reconnect_delay(ConnectionClosedError(None, None), 7.0) == 7.0
    assert reconnect_delay(None, 7.0) == 7.0


def test_backoff_doubles_up_to_the_cap():
    assert backoff_delay(0, 0.1, rand=lambda: 1.0) == pytest.approx(0.1)
    assert backoff_delay(3, 0.1, rand=lambda: 1.0) == pytest.approx(0.8)
    assert backoff_delay(3, 0.1, rand=lambda: 0.0) == pytest.approx(0.4)
    assert backoff_delay(60, 0.1, cap=5.0, rand=lambda: 1.0) == pytest.approx(5.0)


def test_repeated_short_connections_with_a_zero_hint_back_off():
    policy = Reconnect(base=0.2, min_uptime=5.0)
    delays = []
    for _ in range(4):
        policy.opened()
        delays.append(policy.delay_after(closed_with('{"reconnect_after_ms":0}')))
    assert delays[0] == 0.0  # the first short connection: the hint as given
    assert all(d >= 0.2 * 2 ** (k + 1) / 2 for k, d in enumerate(delays[1:], start=1)), delays


class Recorded(Reconnect):
    """The helper's policy, recording when connections open and end (monotonic s)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.opens, self.ends, self.starts = [], [], []

    def opened(self):
        self.opens.append(time.monotonic())
        super().opened()

    def delay_after(self, closed=None):
        delay = super().delay_after(closed)
        rcvd = getattr(closed, "rcvd", None)
        self.ends.append((time.monotonic(), rcvd, delay))
        return delay


async def recording_app():
    """A websockets echo app recording `{"id":…,"seq":…}` messages: id -> seqs in order."""
    received = {}

    async def handler(ws):
        try:
            async for message in ws:
                doc = json.loads(message)
                received.setdefault(doc["id"], []).append(doc["seq"])
                await ws.send(message)
        except Exception:
            pass

    port = free_port()
    server = await serve(handler, "127.0.0.1", port, compression=None)
    return server, port, received


async def watch_lag(lag: list) -> None:
    """Records in lag[0] how late this event loop ran a 10 ms timer at worst."""
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lag[0] = max(lag[0], time.monotonic() - before - 0.01)


async def wait_until(cond, what, timeout):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_reconnecting_loop_honours_the_hint_through_a_drain():
    asyncio.run(asyncio.wait_for(_through_a_drain(), 60))


async def _through_a_drain():
    server_a, port_a, got_a = await recording_app()
    server_b, port_b, got_b = await recording_app()
    pod = start_wsdrain(port_a, "--drain-delay", "0", "--drain-window", "1500ms",
                        "--reconnect-jitter", f"{JITTER_MS}ms", "--close-timeout", "2s")
    neighbour = start_wsdrain(port_b)
    pod_url, neighbour_url = f"ws://127.0.0.1:{pod[1]}/", f"ws://127.0.0.1:{neighbour[1]}/"
    policies = [Recorded() for _ in range(CLIENTS)]
    outboxes = [asyncio.Queue() for _ in range(CLIENTS)]
    seqs = [0] * CLIENTS
    tasks = []
    try:
        for i in range(CLIENTS):
            urls = iter([pod_url])

            def url(urls=urls, p=policies[i]):
                # Asked at each attempt: when the client chose to connect (the handshake
                # after it is the servers').
                p.starts.append(time.monotonic())
                return next(urls, neighbour_url)

            tasks.append(asyncio.create_task(follow(url, lambda m: None, outboxes[i], policies[i])))
        await wait_until(lambda: all(p.opens for p in policies), "every client to connect", 10)

        async def feed():
            while True:
                for i in range(CLIENTS):
                    outboxes[i].put_nowait(json.dumps({"id": i, "seq": seqs[i]}))
                    seqs[i] += 1
                await asyncio.sleep(0.025)

        feeding = asyncio.create_task(feed())
        await asyncio.sleep(0.2)
        lag = [0.0]
        watching = asyncio.create_task(watch_lag(lag))
        await asyncio.to_thread(_post_drain, pod[2])
        await wait_until(lambda: all(len(p.opens) >= 2 for p in policies), "every client at the neighbour", 15)
        watching.cancel()
        await asyncio.sleep(0.2)
        feeding.cancel()
        await wait_until(
            lambda: all(len(got_a.get(i, [])) + len(got_b.get(i, [])) >= seqs[i] for i in range(CLIENTS)),
            "the apps to receive every message", 5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pod[0].stop(signal.SIGKILL)
        neighbour[0].stop(signal.SIGKILL)
        server_a.close()
        server_b.close()

    worst = 0.0
    late_s = LATE_S + lag[0]  # on a starved box nothing reconnects sooner than its loop runs
    for i, p in enumerate(policies):
        ended_at, rcvd, delay = p.ends[0]
        assert rcvd is not None and rcvd.code == 1012, f"client {i}: {rcvd}"
        hint = parse_hint(rcvd.reason)
        assert hint is not None and 0 <= hint <= JITTER_MS, rcvd.reason
        assert len(p.starts) == 2 and p.opens[1] > p.starts[1], f"client {i}: attempts {p.starts}"
        waited = p.starts[1] - ended_at
        assert waited >= hint / 1000, f"client {i} reconnected after {waited:.3f} s, before its hint {hint} ms"
        assert waited <= hint / 1000 + late_s, (
            f"client {i} reconnected {waited - hint / 1000:.3f} s after its hint "
            f"(allowed {late_s:.3f} s: 100 ms + event-loop lag)")
        worst = max(worst, waited - hint / 1000)
        # Exactly once and in order: a prefix at the old pod's app, the rest at the neighbour's.
        assert got_a.get(i, []) + got_b.get(i, []) == list(range(seqs[i])), f"client {i} messages"
        assert got_b.get(i), f"client {i} sent nothing after the move"
    print(f"latest reconnect after its hint: {worst * 1000:.1f} ms (loop at most {lag[0] * 1000:.0f} ms late)")


def _post_drain(admin_port):
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{admin_port}/drain", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 202


def test_reconnecting_loop_backs_off_without_a_hint():
    asyncio.run(asyncio.wait_for(_without_a_hint(), 30))


async def _without_a_hint():
    server, port, _ = await recording_app()
    pod = start_wsdrain(port)
    policy = Recorded(base=0.2, cap=5.0)
    task = asyncio.create_task(follow(lambda: f"ws://127.0.0.1:{pod[1]}/", lambda m: None,
                                      asyncio.Queue(), policy))
    try:
        await wait_until(lambda: policy.opens, "the client to connect", 10)
        pod[0].stop(signal.SIGKILL)  # no close frame; nothing listens on the port afterwards
        await asyncio.sleep(3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
    ends = policy.ends
    delays = [round(d, 3) for _, _, d in ends]
    assert 3 <= len(ends) <= 5, f"{len(ends)} attempts in 3 s: {delays}"
    for k, (at, rcvd, delay) in enumerate(ends):
        assert rcvd is None, "no close frame, no hint"
        ceiling = min(5.0, 0.2 * 2 ** (k + 1))
        assert ceiling / 2 <= delay <= ceiling, f"attempt {k} waited {delay:.3f} s: {delays}"
        if k:
            assert at - ends[k - 1][0] >= ends[k - 1][2], f"attempt {k} came too early: {delays}"



SNIPPET = re.compile(r"<!-- snippet: (\S+) -->\n```\w*\n(.*?)```", re.S)


def test_readme_snippets_are_the_tested_files():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Honouring the hint", 1)
    assert len(section) == 2, "README has no 'Honouring the hint' section"
    body = section[1].split("\n## ", 1)[0]
    snippets = dict(SNIPPET.findall(body))
    assert set(snippets) == {
        "clients/js/examples/browser.js",
        "clients/js/examples/partysocket.js",
        "clients/js/examples/reconnecting-websocket.js",
        "clients/js/examples/socket.io.js",
        "clients/js/examples/graphql-ws.js",
        "clients/python/examples/reconnecting_loop.py",
        "clients/python/examples/async_for_loop.py",
    }, sorted(snippets)
    for path, text in snippets.items():
        assert text == (ROOT / path).read_text(), f"README snippet differs from {path}"


async def service(targets):
    """A Service in front of the pods: each new TCP connection goes to targets[0](), a
    port chosen when the connection arrives (the test switches it at the drain)."""

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        try:
            pod_r, pod_w = await asyncio.open_connection("127.0.0.1", targets[0]())
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, pod_w), pipe(pod_r, client_w))

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, port


def test_async_for_loop_honours_the_hint_through_a_drain():
    asyncio.run(asyncio.wait_for(_async_for_through_a_drain(), 60))


async def _async_for_through_a_drain():
    from async_for_loop import follow as follow_async_for

    server_a, port_a, _ = await recording_app()
    server_b, port_b, _ = await recording_app()
    pod = start_wsdrain(port_a, "--drain-delay", "0", "--drain-window", "1500ms",
                        "--reconnect-jitter", f"{JITTER_MS}ms", "--close-timeout", "2s")
    neighbour = start_wsdrain(port_b)
    target = [pod[1]]
    svc, svc_port = await service([lambda: target[0]])
    policies = [Recorded() for _ in range(CLIENTS)]
    tasks = [asyncio.create_task(follow_async_for(f"ws://127.0.0.1:{svc_port}/", lambda m: None, p))
             for p in policies]
    lag = [0.0]
    try:
        await wait_until(lambda: all(p.opens for p in policies), "every client to connect", 10)
        watching = asyncio.create_task(watch_lag(lag))
        target[0] = neighbour[1]  # the endpoint leaves the Service as the drain starts
        await asyncio.to_thread(_post_drain, pod[2])
        await wait_until(lambda: all(len(p.opens) >= 2 for p in policies), "every client at the neighbour", 15)
        watching.cancel()
        await asyncio.sleep(0.5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        svc.close()
        pod[0].stop(signal.SIGKILL)
        neighbour[0].stop(signal.SIGKILL)
        server_a.close()
        server_b.close()
    slack = 0.3 + lag[0]  # the loop's own reconnect, the handshake through the Service
    for i, p in enumerate(policies):
        ended_at, rcvd, delay = p.ends[0]
        assert rcvd is not None and rcvd.code == 1012, f"client {i}: {rcvd}"
        hint = parse_hint(rcvd.reason)
        assert hint is not None and delay == hint / 1000, f"client {i}: waited {delay} for {rcvd.reason}"
        assert len(p.opens) == 2, f"client {i}: {len(p.opens)} connections"
        waited = p.opens[1] - ended_at
        assert hint / 1000 <= waited <= hint / 1000 + slack, f"client {i}: open {waited:.3f} s after the close, hint {hint} ms"
