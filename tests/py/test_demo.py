"""`wsdrain demo` (the built binary, its real child proxies and clients): the table has
the third column, "clients honour the hint", and it shows what the hint is for."""

import re
import subprocess

from conftest import wsdrain_bin

CLIENTS, WINDOW_S, JITTER_S, DELAY_S = 200, 2, 5, 1  # the demo's jitter is 5 s, its delay 1 s


def test_demo_shows_clients_that_honour_the_hint():
    out = subprocess.run(
        [wsdrain_bin(), "demo", "--clients", str(CLIENTS), "--drain-window", f"{WINDOW_S}s"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "  second | staggered drain | abrupt stop | clients honour the hint" in out, out
    rows = [line.split("|") for line in out.splitlines() if re.match(r"^\s+\d+ \|", line)]
    cell = lambda s: int(s) if s.strip() else 0  # noqa: E731
    staggered = [cell(r[1]) for r in rows]
    honour = [cell(r[3]) for r in rows]
    assert sum(staggered) == CLIENTS and sum(honour) == CLIENTS, out
    assert re.search(rf"closes \|\s+{CLIENTS} got 1012 \|.*\|\s+{CLIENTS} got 1012", out), out
    # Honouring clients arrive over window + jitter instead of the window alone, evenly:
    # every second within 1.25x of n / (window + jitter), none after it.
    even = CLIENTS / (WINDOW_S + JITTER_S)
    last = max(i for i, v in enumerate(honour) if v)
    assert last <= DELAY_S + WINDOW_S + JITTER_S, out
    assert max(honour) <= 1.25 * even, f"peak {max(honour)}/s, even {even:.1f}/s\n{out}"
    assert max(honour) < max(staggered), out


def test_demo_sse_shows_eventsource_clients_returning_evenly():
    out = subprocess.run(
        [wsdrain_bin(), "demo", "--sse", "--clients", str(CLIENTS), "--drain-window", f"{WINDOW_S}s"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert "staggered drain (retry: hint) | abrupt stop (browser default 3 s)" in out, out
    rows = [line.split("|") for line in out.splitlines() if re.match(r"^\s+\d+ \|", line)]
    cell = lambda s: int(s) if s.strip() else 0  # noqa: E731
    staggered = [cell(r[1]) for r in rows]
    abrupt = [cell(r[2]) for r in rows]
    assert sum(staggered) == CLIENTS and sum(abrupt) == CLIENTS, out
    # EventSource clients honour `retry:`: over window + jitter, every second within
    # 1.25x of the even rate (plus one for the seconds the window's edges split).
    even = CLIENTS / (WINDOW_S + JITTER_S)
    assert max(staggered) <= 1.25 * even + 1, f"peak {max(staggered)}/s, even {even:.1f}/s\n{out}"
    assert max(abrupt) >= 0.9 * CLIENTS, f"the abrupt stop brings them back together\n{out}"
