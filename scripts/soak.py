"""Soak test for wsdrain: many WebSocket clients with random traffic, churn, drains and
proxy restarts, for a bounded time; samples the proxy's RSS and open descriptors and
ends with a report (CSV of samples, JSON summary, Markdown table).

`--single-process` keeps ONE proxy process for the whole run (no drain, no restart), so
slow growth cannot hide behind a restart: it passes when RSS over the last half of the
run stays within `--flat-pct` (3 %), descriptors return to the idle count and nothing
panicked; it also writes `rss.svg`, a plot of RSS and open connections over time.

Run through scripts/soak, which builds the release binary and sets up the venv.
Everything talks to 127.0.0.1 only.
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/py"))
from loopback import free_port  # noqa: E402


def proc_status(pid):
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) if m else None


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def quiet_fds(pid):
    """Open descriptors with no admin request in flight: the lowest of several reads
    (a scrape's connection is still open on the proxy's side for a moment after the
    answer, which would count as one more)."""
    await asyncio.sleep(1)
    counts = []
    for _ in range(5):
        n = proc_fds(pid)
        if n is not None:
            counts.append(n)
        await asyncio.sleep(0.3)
    return min(counts) if counts else None


def scrape(admin):
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=3) as r:
            text = r.read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Proxy:
    """One generation of the proxy process."""

    def __init__(self, args, gen, listen, upstream, admin, outdir):
        self.gen = gen
        self.admin = admin
        self.log_path = outdir / f"proxy-gen{gen}.log"
        self.log = open(self.log_path, "w")
        cmd = [
            args.bin, "proxy",
            "--listen", listen, "--upstream", upstream, "--admin", admin,
            "--max-connections", str(args.connections * 2 + 1000),
            "--drain-delay", "1s", "--drain-window", args.drain_window,
            "--close-timeout", "3s", "--reconnect-jitter", "3s",
            "--handshake-timeout", "10s", "--log-level", "warn",
        ]
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self.last_metrics = {}

    def alive(self):
        return self.p.poll() is None

    async def wait_ready(self):
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if scrape(self.admin) is not None:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("proxy did not come up")

    async def terminate(self, timeout):
        """SIGTERM (a drain), then wait for the exit; returns (exit code, seconds)."""
        m = scrape(self.admin)
        if m:
            self.last_metrics = m
        self.open_at_signal = int(self.last_metrics.get("websocket_connections_active", -1))
        t = time.monotonic()
        self.p.send_signal(signal.SIGTERM)
        while self.p.poll() is None and time.monotonic() - t < timeout:
            m = scrape(self.admin)
            if m:
                self.last_metrics = m
            await asyncio.sleep(0.5)
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
            code = "killed"
        else:
            code = self.p.returncode
        self.log.close()
        return code, time.monotonic() - t


class Stats:
    def __init__(self):
        self.c = Counter()
        self.connected = 0
        self.close_codes = Counter()
        self.connect_errors = Counter()


def write_plot(samples, path, title):
    """An SVG plot of RSS (MiB, left axis) and open connections (right axis) over time,
    written without any plotting library so the soak needs nothing beyond the test venv."""
    rows = [r for r in samples if r["rss_kib"]]
    if len(rows) < 2:
        return
    w, h, left, right, top, bottom = 900, 420, 70, 70, 40, 50
    pw, ph = w - left - right, h - top - bottom
    t_max = max(r["t"] for r in rows) or 1
    rss = [r["rss_kib"] / 1024 for r in rows]
    r_max = max(rss) * 1.1
    a_max = max(max(r["active"] for r in rows), 1) * 1.1

    def x(t):
        return left + pw * t / t_max

    def y(v, top_v):
        return top + ph - ph * v / top_v

    rss_pts = " ".join(f"{x(r['t']):.1f},{y(v, r_max):.1f}" for r, v in zip(rows, rss))
    act_pts = " ".join(f"{x(r['t']):.1f},{y(max(r['active'], 0), a_max):.1f}" for r in rows)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
           f'<line x1="{left + pw}" y1="{top}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>']
    for i in range(6):
        tv = t_max * i / 5
        out.append(f'<text x="{x(tv):.1f}" y="{top + ph + 18}" text-anchor="middle">'
                   f'{tv / 60:.0f}</text>')
        rv = r_max * i / 5
        out.append(f'<text x="{left - 6}" y="{y(rv, r_max) + 4:.1f}" text-anchor="end" '
                   f'fill="#c0392b">{rv:.1f}</text>')
        av = a_max * i / 5
        out.append(f'<text x="{left + pw + 6}" y="{y(av, a_max) + 4:.1f}" '
                   f'fill="#2c6fbb">{av:.0f}</text>')
        out.append(f'<line x1="{left}" y1="{y(rv, r_max):.1f}" x2="{left + pw}" '
                   f'y2="{y(rv, r_max):.1f}" stroke="#eee"/>')
    out += [f'<polyline fill="none" stroke="#2c6fbb" stroke-width="1" points="{act_pts}"/>',
            f'<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{rss_pts}"/>',
            f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">minutes</text>',
            f'<text x="15" y="{top + ph / 2}" fill="#c0392b" transform="rotate(-90 15 '
            f'{top + ph / 2})" text-anchor="middle">RSS (MiB)</text>',
            f'<text x="{w - 12}" y="{top + ph / 2}" fill="#2c6fbb" transform="rotate(90 '
            f'{w - 12} {top + ph / 2})" text-anchor="middle">open connections</text>',
            '</svg>']
    Path(path).write_text("\n".join(out) + "\n")


def last_half_flatness(samples, duration):
    """RSS over the second half of a single-process run: min, max, first, last and the
    spread in percent of the minimum (what `--flat-pct` bounds)."""
    rows = [s for s in samples if s["phase"] == "run" and s["rss_kib"] and s["t"] >= duration / 2]
    if len(rows) < 2:
        return None
    lo = min(r["rss_kib"] for r in rows)
    hi = max(r["rss_kib"] for r in rows)
    first, last = rows[0]["rss_kib"], rows[-1]["rss_kib"]
    # Informational, beside the strict min-max check: the spread of the middle 90 % of
    # samples (a one-sample spike during a reconnect burst does not move it) and the
    # trend, median of the first third of the half against the last third.
    ordered = sorted(r["rss_kib"] for r in rows)
    p5, p95 = ordered[len(ordered) * 5 // 100], ordered[len(ordered) * 95 // 100]
    third = max(1, len(rows) // 3)
    head = sorted(r["rss_kib"] for r in rows[:third])[third // 2]
    tail = sorted(r["rss_kib"] for r in rows[-third:])[third // 2]
    return {"from_s": rows[0]["t"], "samples": len(rows), "min_kib": lo, "max_kib": hi,
            "p5_kib": p5, "p95_kib": p95, "p5_p95_spread_pct": round(100 * (p95 - p5) / p5, 2),
            "median_drift_pct": round(100 * (tail - head) / head, 2),
            "first_kib": first, "last_kib": last,
            "spread_pct": round(100 * (hi - lo) / lo, 2),
            "drift_pct": round(100 * (last - first) / first, 2),
            "active_range": [min(r["active"] for r in rows), max(r["active"] for r in rows)]}


def proxy_exit_ok(drains):
    """The single process ended through its own SIGTERM drain with exit code 0 (not an
    earlier crash, not a kill)."""
    return bool(drains) and drains[-1]["exit"] == 0


def payload(rng):
    r = rng.random()
    if r < 0.70:
        n = rng.randint(1, 127)
    elif r < 0.95:
        n = rng.randint(128, 4096)
    else:
        n = rng.randint(4097, 65536)
    if rng.random() < 0.5:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(min(n, 2048)))
    return rng.randbytes(n)


async def client(i, url, args, stats, stop, sem):
    rng = random.Random(i)
    await asyncio.sleep(rng.uniform(0, args.ramp))
    while not stop.is_set():
        try:
            async with sem:
                ws = await connect(url, compression=None, open_timeout=15, subprotocols=["chat.v2"],
                                   ping_interval=None, close_timeout=5, max_size=2 ** 21)
        except InvalidStatus as e:
            stats.connect_errors[f"http_{e.response.status_code}"] += 1
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            continue
        except (OSError, asyncio.TimeoutError, Exception) as e:
            stats.connect_errors[type(e).__name__] += 1
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            continue
        stats.connected += 1
        stats.c["connects"] += 1
        lifetime = rng.expovariate(1 / args.lifetime)
        ends = time.monotonic() + lifetime
        hint = None
        try:
            while not stop.is_set() and time.monotonic() < ends:
                try:
                    await asyncio.wait_for(stop.wait(), rng.uniform(0, 2 * args.interval))
                    break
                except asyncio.TimeoutError:
                    pass
                msg = payload(rng)
                await ws.send(msg)
                echo = await asyncio.wait_for(ws.recv(), 30)
                if echo == msg:
                    stats.c["echo_ok"] += 1
                else:
                    stats.c["echo_mismatch"] += 1
            await ws.close()
            stats.c["client_closes"] += 1
        except ConnectionClosed as e:
            rcvd = e.rcvd
            code = rcvd.code if rcvd else None
            stats.close_codes[str(code)] += 1
            if rcvd and rcvd.reason:
                try:
                    hint = json.loads(rcvd.reason).get("reconnect_after_ms")
                except ValueError:
                    stats.c["bad_hint"] += 1
        except asyncio.TimeoutError:
            stats.c["echo_timeout"] += 1
            await ws.close()
        except Exception as e:  # noqa: BLE001 - counted, never fatal
            stats.c[f"client_error_{type(e).__name__}"] += 1
        finally:
            stats.connected -= 1
        if hint is not None:
            await asyncio.sleep(hint / 1000)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--single-process", action="store_true",
                    help="one proxy process for the whole run: no drain, no restart; pass = RSS "
                         "over the last half within --flat-pct, descriptors back to idle, no "
                         "panic (defaults: --duration 3600 --connections 3000)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds (default 180; 3600 with --single-process)")
    ap.add_argument("--connections", type=int, default=None,
                    help="default 1000; 3000 with --single-process")
    ap.add_argument("--cycle", type=float, default=90,
                    help="seconds between drains (each followed by a proxy restart); "
                         "ignored with --single-process")
    ap.add_argument("--flat-pct", type=float, default=3,
                    help="--single-process: largest RSS spread allowed over the last half")
    ap.add_argument("--interval", type=float, default=10,
                    help="mean seconds between messages per connection")
    ap.add_argument("--lifetime", type=float, default=120,
                    help="mean seconds a client keeps a connection before reconnecting")
    ap.add_argument("--ramp", type=float, default=20, help="seconds to open all connections")
    ap.add_argument("--drain-window", default="10s")
    ap.add_argument("--sample", type=float, default=5)
    ap.add_argument("--warmup", type=float, default=45,
                    help="seconds of each generation excluded from the flatness check")
    ap.add_argument("--out", default=str(ROOT / "target" / "soak"))
    args = ap.parse_args()
    if args.duration is None:
        args.duration = 3600 if args.single_process else 180
    if args.connections is None:
        args.connections = 3000 if args.single_process else 1000
    if args.single_process:
        args.cycle = float("inf")

    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    app_port, listen_port, admin_port = free_port(), free_port(), free_port()
    upstream = f"127.0.0.1:{app_port}"
    listen = f"127.0.0.1:{listen_port}"
    admin = f"127.0.0.1:{admin_port}"
    app_log = open(outdir / "app.log", "w")
    app = subprocess.Popen([sys.executable, str(ROOT / "tests/py/echo_server.py"),
                            "--port", str(app_port)], stdout=app_log, stderr=subprocess.STDOUT)
    await asyncio.sleep(1.5)

    gen = 0
    proxy = Proxy(args, gen, listen, upstream, admin, outdir)
    children = {"app": app, "proxy": proxy.p}

    def watchdog():
        """Hard stop: whatever hangs, nothing outlives --duration by more than 5 minutes."""
        print(json.dumps({"watchdog": "killed the run"}), flush=True)
        for c in children.values():
            if c.poll() is None:
                c.kill()
        os._exit(3)

    asyncio.get_running_loop().call_later(args.duration + 300, watchdog)
    await proxy.wait_ready()
    idle_fds = await quiet_fds(proxy.p.pid)  # before any client connects
    generations = [{"gen": 0, "pid": proxy.p.pid, "start": 0.0}]
    t0 = time.monotonic()
    stats = Stats()
    stop = asyncio.Event()
    sem = asyncio.Semaphore(200)
    tasks = [asyncio.create_task(client(i, f"ws://{listen}/soak", args, stats, stop, sem))
             for i in range(args.connections)]
    samples = []
    next_drain = args.cycle
    errors_total = Counter()
    drains = []
    load = []

    def sample(phase):
        m = scrape(admin) or {}
        if m:
            proxy.last_metrics = m
        row = {
            "t": round(time.monotonic() - t0, 1), "gen": proxy.gen, "phase": phase,
            "pid": proxy.p.pid, "rss_kib": proc_status(proxy.p.pid), "fds": proc_fds(proxy.p.pid),
            "active": int(m.get("websocket_connections_active", -1)),
            "errors": int(sum(v for k, v in m.items() if k.startswith("websocket_errors_total"))),
            "clients_connected": stats.connected,
            "echo_ok": stats.c["echo_ok"], "echo_mismatch": stats.c["echo_mismatch"],
            "loadavg1": os.getloadavg()[0],
        }
        samples.append(row)
        load.append(row["loadavg1"])
        print(json.dumps(row), flush=True)

    def collect_errors(metrics):
        mine = {}
        for k, v in metrics.items():
            m = re.match(r'websocket_errors_total\{kind="([^"]+)"\}', k)
            if m and v:
                errors_total[m.group(1)] += int(v)
                mine[m.group(1)] = int(v)
        return mine

    while time.monotonic() - t0 < args.duration:
        await asyncio.sleep(args.sample)
        sample("run")
        elapsed = time.monotonic() - t0
        if not proxy.alive():
            print(json.dumps({"proxy_exited": proxy.p.returncode}), flush=True)
            break
        if elapsed >= next_drain and elapsed + 20 < args.duration:
            code, secs = await proxy.terminate(timeout=60)
            errs = collect_errors(proxy.last_metrics)
            drains.append({"gen": proxy.gen, "exit": code, "seconds": round(secs, 1),
                           "open_at_drain": proxy.open_at_signal, "errors": errs})
            print(json.dumps({"drain": drains[-1]}), flush=True)
            gen += 1
            proxy = Proxy(args, gen, listen, upstream, admin, outdir)
            children["proxy"] = proxy.p
            await proxy.wait_ready()
            generations.append({"gen": gen, "pid": proxy.p.pid,
                                "start": round(time.monotonic() - t0, 1)})
            next_drain = elapsed + args.cycle

    # Wind down: clients close, the proxy must come back to its idle descriptor count.
    stop.set()
    await asyncio.wait(tasks, timeout=60)
    for _ in range(60):
        m = scrape(admin) or {}
        if m.get("websocket_connections_active", 1) == 0:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    sample("idle-end")
    end_fds = await quiet_fds(proxy.p.pid)
    code, secs = await proxy.terminate(timeout=30)
    errs = collect_errors(proxy.last_metrics)
    drains.append({"gen": proxy.gen, "exit": code, "seconds": round(secs, 1), "open_at_drain": 0,
                   "errors": errs})
    app.send_signal(signal.SIGTERM)
    try:
        app.wait(10)
    except subprocess.TimeoutExpired:
        app.kill()

    panics = []
    for g in generations:
        text = (outdir / f"proxy-gen{g['gen']}.log").read_text(errors="replace")
        panics += [l for l in text.splitlines() if "panicked" in l]

    # Flatness: per generation, RSS samples after warm-up while running.
    flat = []
    for g in generations:
        rows = [s for s in samples if s["gen"] == g["gen"] and s["phase"] == "run"
                and s["rss_kib"] and s["t"] - g["start"] >= args.warmup]
        if len(rows) >= 2:
            lo = min(r["rss_kib"] for r in rows)
            hi = max(r["rss_kib"] for r in rows)
            first, last = rows[0]["rss_kib"], rows[-1]["rss_kib"]
            flat.append({"gen": g["gen"], "samples": len(rows), "min_kib": lo, "max_kib": hi,
                         "first_kib": first, "last_kib": last,
                         "spread_pct": round(100 * (hi - lo) / lo, 1),
                         "drift_pct": round(100 * (last - first) / first, 1),
                         "active_range": [min(r["active"] for r in rows), max(r["active"] for r in rows)]})
    single = last_half_flatness(samples, args.duration) if args.single_process else None
    summary = {
        "args": {k: (v if v != float("inf") else None) for k, v in vars(args).items()},
        "single_process_last_half": single,
        "generations": generations,
        "drains": drains,
        "rss_flatness": flat,
        "idle_fds_start": idle_fds,
        "idle_fds_end": end_fds,
        "errors_total_by_kind": dict(errors_total),
        "panics": panics,
        "client": dict(stats.c),
        "close_codes_seen_by_clients": dict(stats.close_codes),
        "connect_errors": dict(stats.connect_errors),
        "loadavg1": {"min": min(load), "max": max(load), "mean": round(sum(load) / len(load), 2)} if load else None,
        "ncpu": os.cpu_count(),
    }
    (outdir / "samples.csv").write_text(
        ",".join(samples[0].keys()) + "\n" +
        "\n".join(",".join(str(v) for v in s.values()) for s in samples) + "\n")
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if args.single_process:
        write_plot(samples, outdir / "rss.svg",
                   f"wsdrain single-process soak: {args.connections} clients, "
                   f"{args.duration / 60:.0f} min, one process (pid {generations[0]['pid']})")
        flat_ok = (single is not None and single["spread_pct"] <= args.flat_pct
                   and len(generations) == 1 and proxy_exit_ok(drains))
    else:
        flat_ok = all(f["spread_pct"] <= 10 for f in flat)
    ok = (not panics and stats.c["echo_mismatch"] == 0 and flat_ok
          and (end_fds is None or idle_fds is None or end_fds <= idle_fds))
    print("SOAK", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
