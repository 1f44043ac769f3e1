"""Draws the rollout benchmark: for every run (contender x pod start-up time), one
panel with the fleet's reconnects per 100 ms (and the rate the overlapping drains'
schedules add up to), one panel with connections per pod over time.
Usage: plot_rollout.py rollout.json out.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

doc = json.load(open(sys.argv[1]))
s = doc["settings"]
runs = [r for r in doc["results"] if "reconnects_per_100ms" in r]
if not runs:
    sys.exit("no completed runs in " + sys.argv[1])
fig, axes = plt.subplots(
    len(runs), 2, figsize=(13, 2.6 * len(runs)), squeeze=False, sharex="row"
)
ymax = max(max(r["reconnects_per_100ms"]) for r in runs) * 1.1
for row, r in zip(axes, runs):
    left, right = row
    series = r["reconnects_per_100ms"]
    t0 = r["series_start_s"]
    xs = [t0 + i * s["bin_ms"] / 1000 for i in range(len(series))]
    left.step(xs, series, where="post", color="#1b9e77", lw=1.2, label="all clients")
    left.step(
        xs,
        r["reconnects_per_100ms_honouring"],
        where="post",
        color="#7570b3",
        lw=0.9,
        label="hint-honouring clients",
    )
    if r.get("expected_peak_per_100ms") is not None:
        left.axhline(
            r["expected_peak_per_100ms"],
            color="grey",
            ls="--",
            lw=1,
            label="sum of overlapping drains' even rates",
        )
    fleet = r.get("fleet")
    if fleet:
        # The budget R as reconnects per 100 ms, and the honouring clients' share of it.
        per_bin = fleet["fleet_max_rate"] * s["bin_ms"] / 1000
        left.axhline(per_bin, color="#e7298a", lw=1, label="fleet budget R (per 100 ms)")
        share = fleet.get("honouring_share", 0.5)
        if share < 1:
            left.axhline(per_bin * share, color="#e7298a", lw=0.8, ls=":", label="R / 2")
    for t in r["terminations"]:
        left.axvline(t["started_s"], color="#d95f02", lw=0.6, alpha=0.6)
    left.set_ylim(0, ymax)
    left.set_ylabel("reconnects / 100 ms")
    left.set_title(
        f'{r["contender"]}, pod start-up {r["startup_s"]:g} s: peak '
        f'{r["peak_reconnects_per_100ms"]}/100 ms, {r["peak_reconnects_per_s"]}/s; '
        f'{r["ended_without_close_frame"]} cut without close frame',
        fontsize=8.5,
    )
    left.grid(alpha=0.3)
    ts = r["pods_series_t_s"]
    for name, ys in r["pods_series"].items():
        if max(ys, default=0) == 0:
            continue
        right.plot(ts, ys, lw=1, label=name)
    right.axvline(r["rollout_s"], color="black", lw=0.8, ls=":")
    right.set_ylabel("connections per pod")
    imb_end, imb_after = r.get("imbalance_end"), r.get("imbalance_after")
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    right.set_title(
        f'rollout {r["rollout_s"]:.0f} s (dotted); imbalance max÷min at end '
        f'{fmt(imb_end)}, {r["after_s"]:g} s later {fmt(imb_after)}',
        fontsize=8.5,
    )
    right.grid(alpha=0.3)
axes[0][0].legend(fontsize=7, loc="upper left")
axes[0][1].legend(fontsize=6, ncol=2, loc="upper right")
axes[-1][0].set_xlabel("seconds since the rollout began (orange: an old pod's termination begins)")
axes[-1][1].set_xlabel("seconds since the rollout began")
honouring = (
    "all honour the reconnect hint"
    if s.get("clients_honouring_hint") == s["clients"]
    else "half honour the reconnect hint"
)
fig.suptitle(
    f'Rolling update of {s["pods"]} pods behind HAProxy {s.get("balance", "leastconn")}, {s["clients"]} WebSocket '
    f'clients ({honouring}); wsdrain window {s["drain_window_s"]:g} s, '
    f'delay {s["drain_delay_s"]:g} s; load average {doc["machine"].get("loadavg", "?").split()[0]}',
    fontsize=10,
)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print("wrote", sys.argv[2])
