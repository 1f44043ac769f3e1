"""Server-Sent Events through a drain, at scale, with a real SSE client (httpx + httpx-sse).

N clients stream events from a pod (wsdrain in front of tests/py/sse_app.py); the pod is
drained with SIGTERM (--drain-window 10s --reconnect-jitter 5s). Each client honours
the `retry:` it is given: it waits that long and reconnects to the neighbour pod (a
second wsdrain in front of the same app) with Last-Event-ID. Checked:

1. every stream ends cleanly (a last chunk or a FIN, no reset) at an event boundary, with a
   `retry:` within [0, jitter];
2. no event is cut or duplicated: each client's ids run 1, 2, 3, … on the first pod,
   and the neighbour's first event is the next id;
3. the arrivals the hints schedule (close time + retry) are even: no bucket above 1.25x
   the even rate over window + jitter. Buckets are 100 ms at the full count; at a
   CI-sized count they widen so that an even bucket still holds 10 arrivals. Judged
   only when this process's event loop never ran more than 50 ms late.

A second run mixes the kinds: N/2 SSE streams and N/2 WebSockets (tests/py/sse_app.py
accepts both) in one drain; the WebSockets get 1012 + a hint and honour it, and the
arrivals of both kinds together keep the same bound.

WSDRAIN_SSE_CLIENTS sets N (default 300, CI-sized; the issue's full count is 2000).
"""

import asyncio
import contextlib
import gc
import os
import random
import signal
import ssl
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (tests/py/requirements.txt)")
httpx_sse = pytest.importorskip("httpx_sse", reason="httpx-sse is not installed (tests/py/requirements.txt)")

from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from conftest import HERE, ROOT, Proc, metrics, start_wsdrain  # noqa: E402
from loopback import free_port, wait_port  # noqa: E402

sys.path.insert(0, str(ROOT / "clients" / "python"))
from wsdrain_hint import parse_hint  # noqa: E402

CLIENTS = int(os.environ.get("WSDRAIN_SSE_CLIENTS", "300"))
WINDOW_S = 10.0
JITTER_S = 5.0
LIMIT = 1.25
STARVED_S = 0.05
# Seconds between the app's events: more clients, fewer events each, so that this one
# client process (and the Python app) keep up on a 2-core box; every stream still sees
# several events across the drain.
EVERY_S = max(1.0, CLIENTS / 400)


class Stream:
    def __init__(self):
        self.ids = []
        self.retry = None
        self.ended = None  # monotonic time the first pod's stream ended
        self.error = None
        self.resumed_at = None  # first id from the neighbour
        self.arrived = None  # monotonic time the reconnect was sent


async def stream_client(s: Stream, http, first: str, second: str, opened: asyncio.Event,
                        count: list, total: int) -> None:
    try:
        async with httpx_sse.aconnect_sse(http, "GET", first) as source:
            async for event in source.aiter_sse():
                if event.data == "" and event.retry is not None:
                    s.retry = event.retry
                    continue
                if s.retry is not None:
                    s.error = f"event {event.id} after the retry"
                s.ids.append(int(event.id))
                if len(s.ids) == 1:
                    count[0] += 1
                    if count[0] == total:
                        opened.set()
        s.ended = time.monotonic()
    except Exception as e:  # a reset or an incomplete body: what this test forbids
        s.error = f"{type(e).__name__}: {e}"
        if not s.ids:
            count[0] += 1
            if count[0] == total:
                opened.set()
        return
    if s.retry is None:
        return
    await asyncio.sleep(s.retry / 1000)
    s.arrived = time.monotonic()
    try:
        headers = {"Last-Event-ID": str(s.ids[-1])} if s.ids else {}
        async with httpx_sse.aconnect_sse(http, "GET", second, headers=headers) as source:
            async for event in source.aiter_sse():
                if event.data:
                    s.resumed_at = int(event.id)
                    break
    except Exception as e:
        s.error = f"neighbour: {type(e).__name__}: {e}"


async def watch_lag(lag: list) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lag[0] = max(lag[0], time.monotonic() - before - 0.01)


class Socket:
    """A WebSocket client of the mixed run: closed with 1012 + hint, back after it."""

    def __init__(self):
        self.code = self.hint = self.ended = self.arrived = self.error = None


async def ws_client(c: Socket, first: str, second: str, opened: asyncio.Event, count: list,
                    total: int) -> None:
    try:
        ws = await connect(first, compression=None, ping_interval=None, open_timeout=30,
                           close_timeout=10, max_queue=4)
    except Exception as e:
        c.error = f"connect: {type(e).__name__}: {e}"
        ws = None
    count[0] += 1
    if count[0] == total:
        opened.set()
    if ws is None:
        return
    reason = None
    try:
        await ws.recv()  # the app sends nothing: this waits for the drain's close
    except ConnectionClosed as exc:
        c.ended = time.monotonic()
        if exc.rcvd is not None:
            c.code, reason = exc.rcvd.code, exc.rcvd.reason
    c.hint = parse_hint(reason)
    if c.code != 1012 or c.hint is None:
        c.error = f"closed with {c.code} {reason!r}"
        return
    await asyncio.sleep(max(0.0, c.ended + c.hint / 1000 - time.monotonic()))
    c.arrived = time.monotonic()
    try:
        again = await connect(second, compression=None, ping_interval=None, open_timeout=30,
                              close_timeout=1, max_queue=4)
        await again.close()
    except Exception as e:
        c.error = f"neighbour: {type(e).__name__}: {e}"


async def scenario(pod, pod_listen: int, neighbour_listen: int, n_sse: int,
                   n_ws: int) -> tuple:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0, connect=20.0)
    streams = [Stream() for _ in range(n_sse)]
    sockets = [Socket() for _ in range(n_ws)]
    opened = asyncio.Event()
    count = [0]
    lag = [0.0]
    total = n_sse + n_ws
    # One pool per 50 clients: httpx's pool looks at every connection it holds on each
    # request and each close, which at 2,000 streams in one pool starves the loop.
    group = 50
    ssl_context = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        pools = [await stack.enter_async_context(
            httpx.AsyncClient(limits=limits, timeout=timeout, verify=ssl_context))
            for _ in range((n_sse + group - 1) // group)]
        tasks = []
        # The two kinds interleaved, so both are spread over the whole schedule.
        kinds = ["sse"] * n_sse + ["ws"] * n_ws
        random.Random(7).shuffle(kinds)
        next_sse = next_ws = 0
        for i, kind in enumerate(kinds):
            if kind == "sse":
                tasks.append(asyncio.create_task(stream_client(
                    streams[next_sse], pools[next_sse // group],
                    f"http://127.0.0.1:{pod_listen}/sse",
                    f"http://127.0.0.1:{neighbour_listen}/sse", opened, count, total)))
                next_sse += 1
            else:
                tasks.append(asyncio.create_task(ws_client(
                    sockets[next_ws], f"ws://127.0.0.1:{pod_listen}/ws",
                    f"ws://127.0.0.1:{neighbour_listen}/ws", opened, count, total)))
                next_ws += 1
            if i % 50 == 49:
                await asyncio.sleep(0.05)
        # Every client streaming (or failed, which the checks below report).
        await asyncio.wait_for(opened.wait(), 60 + total / 20)
        await asyncio.sleep(1.5)
        monitor = asyncio.create_task(watch_lag(lag))
        pod.p.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), WINDOW_S + JITTER_S + 60)
        monitor.cancel()
    return streams, sockets, signalled, lag[0]


def run(n_sse: int, n_ws: int) -> tuple:
    """One pod drained under n_sse SSE and n_ws WebSocket clients, a neighbour beside it."""
    app_port = free_port()
    app = Proc([sys.executable, str(HERE / "sse_app.py"), "--port", str(app_port),
                "--every", str(EVERY_S)],
               stdout=subprocess.DEVNULL)
    flags = ["--drain-delay", "0s", "--drain-window", f"{WINDOW_S}s",
             "--reconnect-jitter", f"{JITTER_S}s", "--close-timeout", "20s",
             "--max-connections", str(n_sse + n_ws + 100)]
    try:
        wait_port(app_port)
        pod, pod_listen, _ = start_wsdrain(app_port, *flags)
        neighbour, neighbour_listen, neighbour_admin = start_wsdrain(app_port, *flags)
        try:
            gc.disable()  # no collector pauses in the middle of the timings
            try:
                result = asyncio.run(scenario(pod, pod_listen, neighbour_listen, n_sse, n_ws))
            finally:
                gc.enable()
            pod.p.wait(30)
            assert pod.p.returncode == 0
            counted = [line for line in metrics(neighbour_admin).splitlines()
                       if line.startswith(("websocket_errors_total", "wsdrain_http_requests_total"))
                       and not line.endswith(" 0")]
            print("\nthe neighbour counted:", counted)
        finally:
            pod.stop(signal.SIGQUIT)
            neighbour.stop(signal.SIGQUIT)
    finally:
        app.stop()
    return result


def check_streams(streams: list) -> None:
    errors = [(i, s.error) for i, s in enumerate(streams) if s.error]
    assert not errors, f"{len(errors)} streams cut or broken, e.g. {errors[:5]}"
    for i, s in enumerate(streams):
        assert s.retry is not None, f"stream {i} ended without a retry: hint"
        assert 0 <= s.retry <= JITTER_S * 1000, f"stream {i}: retry {s.retry}"
        assert s.ids == list(range(1, len(s.ids) + 1)), f"stream {i}: ids {s.ids[:10]}…"
        assert s.resumed_at == s.ids[-1] + 1, f"stream {i}: resumed at {s.resumed_at} after {s.ids[-1]}"


def judge_arrivals(what: str, planned: list, measured: list, lag: float) -> None:
    """No bucket of the arrivals over window + jitter above LIMIT x the even rate."""
    n = len(planned)
    span = WINDOW_S + JITTER_S
    bucket = max(0.1, 10 * span / n)
    even = n * bucket / span

    def peak(times):
        counts = {}
        for t in times:
            counts[int(t // bucket)] = counts.get(int(t // bucket), 0) + 1
        return max(counts.values()) / even

    print(f"\n{what}, buckets of {bucket * 1000:.0f} ms (even {even:.1f}): "
          f"peak planned {peak(planned):.2f}x, measured {peak(measured):.2f}x, "
          f"worst loop lag {lag * 1000:.0f} ms")
    if lag > STARVED_S:
        pytest.skip(f"this process's event loop ran {lag * 1000:.0f} ms late (box starved): "
                    f"arrival timings not judged; streams, hints and ids were checked")
    assert peak(planned) <= LIMIT, f"planned arrivals peak {peak(planned):.2f}x the even rate"
    assert peak(measured) <= LIMIT, f"measured arrivals peak {peak(measured):.2f}x the even rate"


def test_sse_streams_end_at_a_boundary_with_retry_and_return_evenly():
    streams, _, signalled, lag = run(CLIENTS, 0)
    check_streams(streams)
    # The arrivals the hints schedule: close time + retry, over window + jitter.
    judge_arrivals(f"{CLIENTS} SSE clients",
                   [s.ended - signalled + s.retry / 1000 for s in streams],
                   [s.arrived - signalled for s in streams], lag)


def test_websockets_and_sse_streams_in_one_drain_return_evenly_together():
    n_ws = CLIENTS // 2
    streams, sockets, signalled, lag = run(CLIENTS - n_ws, n_ws)
    check_streams(streams)
    errors = [(i, c.error) for i, c in enumerate(sockets) if c.error]
    assert not errors, f"{len(errors)} WebSockets without 1012 + hint, e.g. {errors[:5]}"
    for i, c in enumerate(sockets):
        assert 0 <= c.hint <= JITTER_S * 1000, f"socket {i}: hint {c.hint}"
    planned = ([s.ended - signalled + s.retry / 1000 for s in streams]
               + [c.ended - signalled + c.hint / 1000 for c in sockets])
    measured = ([s.arrived - signalled for s in streams]
                + [c.arrived - signalled for c in sockets])
    judge_arrivals(f"{len(streams)} SSE + {len(sockets)} WebSocket clients", planned, measured,
                   lag)
