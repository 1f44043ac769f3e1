#!/usr/bin/env python3
"""Reconnects per 100 ms towards the neighbour pod while 2,000 clients leave a draining
pod (window 6 s, jitter 2 s): clients that ignore the hint vs clients that honour it.
A reconnect is counted when the client starts it (`--field arrived_s`: when its
handshake with the neighbour completed, which on a starved box also shows the
neighbour's accept queue).

Real runs: the scenarios of tests/py/test_hint_arrivals.py (the built wsdrain binary,
`$WSDRAIN_BIN` or target/debug/wsdrain, the Python echo app, `websockets` clients).

  scripts/plot_hint_arrivals.py run  [--out docs/bench/hint-arrivals.json]   # ~1 min
  scripts/plot_hint_arrivals.py plot [--data docs/bench/hint-arrivals.json] [--old FILE]
                                     [--png docs/hint-arrivals.png]

`--old` adds the "honours it" line of an earlier data file (dashed), e.g. a run of
wsdrain 0.1, whose hints were independent random draws. Needs matplotlib for `plot`.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "py"))
os.environ.setdefault("WSDRAIN_BIN", str(ROOT / "target" / "debug" / "wsdrain"))


def run(out: Path) -> None:
    import test_hint_arrivals as t

    doc = {}
    for key, honour in (("ignores", False), ("honours", True)):
        r = t.run_scenario("drain", honour=honour)
        doc[key] = {
            # Per client, in the same order: when it saw its close, its hint, when it
            # started reconnecting and when the neighbour's handshake completed.
            "closed_s": [round(x, 4) for x in r["closed"]],
            "hints_ms": r["hints"],
            "started_s": [round(x, 4) for x in r["started"]],
            "arrived_s": [round(x, 4) for x in r["arrived"]],
            "max_loop_lag_s": round(r["max_loop_lag_s"], 4),
        }
        doc["settings"] = {k: r[k] for k in ("clients", "window_ms", "jitter_ms")}
        print(f"{key}: event loop at most {r['max_loop_lag_s'] * 1000:.0f} ms late", flush=True)
    out.write_text(json.dumps(doc) + "\n")
    print(f"wrote {out}")


def per_100ms(times):
    out = [0] * (int(max(times) / 0.1) + 1)
    for x in times:
        out[max(0, int(x / 0.1))] += 1
    return out


def plot(data: Path, old, png: Path, field: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(data.read_text())
    s = doc["settings"]
    n, w, j = s["clients"], s["window_ms"] / 1000, s["jitter_ms"] / 1000
    fig, ax = plt.subplots(figsize=(10, 4.8))
    lines = [("ignores", doc, "clients ignore the hint (reconnect at once), measured", "#d95f02", "-")]
    if old is not None:
        lines.append(("honours", json.loads(old.read_text()),
                      "clients honour the hint, wsdrain 0.1 (independent random hints)", "#7570b3", "--"))
    lines.append(("honours", doc, "clients honour the hint, measured", "#1b9e77", "-"))
    for key, d, label, color, style in lines:
        series = per_100ms(d[key][field])
        xs = [i * 0.1 for i in range(len(series))]
        ax.step(xs, series, where="post", color=color, linestyle=style,
                label=f"{label}: peak {max(series)}")
    # Where the hints put the honouring clients: the r-th close seen left at
    # (r + 1/2)·window/n and came back its hint later (no timing noise of this box).
    h = doc["honours"]
    order = sorted(range(n), key=lambda i: h["closed_s"][i])
    scheduled = [(k + 0.5) * w / n + h["hints_ms"][i] / 1000 for k, i in enumerate(order)]
    series = per_100ms(scheduled)
    ax.step([i * 0.1 for i in range(len(series))], series, where="post", color="#1b9e77",
            linestyle="--", linewidth=1,
            label=f"where the hints put the honouring clients: peak {max(series)}")
    ax.axhline(n * 0.1 / w, color="#d95f02", linewidth=0.8, linestyle=":")
    ax.axhline(n * 0.1 / (w + j), color="#1b9e77", linewidth=0.8, linestyle=":")
    ax.text(0.05, n * 0.1 / w + 0.5, f"even over the window: {n * 0.1 / w:.1f}", fontsize=8)
    ax.text(w + j - 2.2, n * 0.1 / (w + j) - 2.5, f"even over window + jitter: {n * 0.1 / (w + j):.1f}",
            fontsize=8)
    ax.set_xlabel("seconds since the drain started")
    ax.set_ylabel("reconnects per 100 ms" if field == "started_s" else "handshakes done per 100 ms")
    lag = max(doc[k]["max_loop_lag_s"] for k in ("ignores", "honours"))
    ax.set_title(f"{n} clients leave a draining pod (window {w:g} s, --reconnect-jitter {j:g} s)\n"
                 f"measured with the clients' event loop up to {lag * 1000:.0f} ms late", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "hint-arrivals.json")
    p = sub.add_parser("plot")
    p.add_argument("--data", type=Path, default=ROOT / "docs" / "bench" / "hint-arrivals.json")
    p.add_argument("--old", type=Path, default=None)
    p.add_argument("--png", type=Path, default=ROOT / "docs" / "hint-arrivals.png")
    p.add_argument("--field", choices=["started_s", "arrived_s"], default="started_s",
                   help="when clients started reconnecting (default) or when the handshake completed")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.out)
    else:
        plot(args.data, args.old, args.png, args.field)


if __name__ == "__main__":
    main()
