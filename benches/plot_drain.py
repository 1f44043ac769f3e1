"""Draws the drain benchmark: reconnects per 100 ms at the neighbour pod over time,
one line per contender. Usage: plot_drain.py drain.json out.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

doc = json.load(open(sys.argv[1]))
s = doc["settings"]
fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(10, 7.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.3]}
)
colors = {
    "wsdrain (staggered)": "#1b9e77",
    "wsdrain --drain-window 0": "#d95f02",
    "haproxy soft-stop": "#7570b3",
    "nginx stop": "#e7298a",
    "traefik stop": "#66a61e",
    "caddy stop": "#e6ab02",
}
for r in doc["results"]:
    series = r["series_per_100ms"]
    t0 = r["series_start_s"]
    xs = [t0 + i * s["bin_ms"] / 1000 for i in range(len(series))]
    # Pad to a common right edge so every line returns to zero visibly.
    label = (
        f'{r["contender"]}: peak {r["peak_per_100ms"]}/100 ms, '
        f'empty after {r["time_to_empty_s"]:.1f} s'
    )
    kw = dict(where="post", label=label, color=colors.get(r["contender"]), lw=1.8)
    top.step(xs, series, **kw)
    bottom.step(xs, [max(v, 0.8) for v in series], **kw)
even = s["even_rate_per_100ms"]
for ax in (top, bottom):
    ax.axhline(even, color="grey", ls="--", lw=1)
    ax.axvline(0, color="black", lw=0.8)
    ax.grid(alpha=0.3)
bottom.text(0.60, even * 1.25, f"even rate (clients ÷ window): {even:.0f} per 100 ms",
            color="grey", fontsize=9, transform=bottom.get_yaxis_transform())
top.set_ylabel("reconnects per 100 ms\n(linear)")
bottom.set_yscale("log")
bottom.set_ylim(0.8, None)
bottom.set_ylabel("reconnects per 100 ms\n(log)")
bottom.set_xlabel("seconds since the pod was told to stop (SIGTERM / SIGUSR1)")
top.set_title(
    f'{s["clients"]} WebSocket clients leave a pod and reconnect at once to a neighbour\n'
    f'wsdrain window {s["drain_window_s"]:g} s; HAProxy {s["haproxy"]}; nginx {s["nginx"]}',
    fontsize=10,
)
top.legend(loc="center", fontsize=9, title="per contender", title_fontsize=9)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print("wrote", sys.argv[2])
