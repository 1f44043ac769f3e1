#!/usr/bin/env python3
"""Autobahn conformance through wsdrain: the same verdicts as directly against the app.

Runs the Autobahn fuzzing cases (kosoku, an Autobahn-compatible fuzzing client) against a
Python `websockets` echo app with compression on, once directly and once through
`wsdrain proxy`, and compares `behavior` and `behaviorClose` case by case.

    scripts/autobahn_compare.py              # CI selection: 1-7, 10, 12.1, 13.1
    scripts/autobahn_compare.py --full       # every case; compares the cases the app
                                             # passes directly and lists the others

Some verdicts depend on timing in the app itself, not on what sits in between: in 4.2.5 the
fuzzer sends a text message and then a frame with a reserved opcode, and whether the app
echoes the text before it fails the connection (OK) or fails first (NON-STRICT) varies from
run to run against the app directly. A case whose verdicts differ is therefore run again,
alone, on both sides (up to RERUNS times); it counts as matching only when a re-run gives
the same verdict directly and through wsdrain, and every re-run is printed. A real
difference (wsdrain changing what the client sees) differs on every re-run and fails.

Exit status 0 when every compared case matches, 1 with the differing cases printed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests/py"))
from loopback import free_port, wait_port  # noqa: E402

RERUNS = 3
CI_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*", "12.1.*", "13.1.*"]


def kosoku(target_port: int, outdir: Path, cases, parallelism: int) -> dict:
    args = [str(Path(sys.executable).parent / "kosoku"), "-m", "fuzzingclient",
            f"127.0.0.1:{target_port}", "-o", str(outdir), "-p", str(parallelism)]
    for c in cases:
        args += ["-i", c]
    subprocess.run(args, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=3600)
    index = json.loads((outdir / "index.json").read_text())
    # One agent per report: {agent: {case: {...}}}
    (results,) = index.values()
    return results


def start(wsdrain: str, app_port: int, listen: int, admin: int):
    """The echo app and wsdrain in front of it, both listening when this returns."""
    app = subprocess.Popen([sys.executable, str(ROOT / "tests/py/echo_server.py"), "--port", str(app_port)],
                           stdout=subprocess.DEVNULL)
    proxy = subprocess.Popen([wsdrain, "proxy", "--listen", f"127.0.0.1:{listen}",
                              "--upstream", f"127.0.0.1:{app_port}", "--admin", f"127.0.0.1:{admin}",
                              "--log-level", "error"])
    try:
        wait_port(app_port)
        wait_port(listen)
    except BaseException:
        stop(app, proxy)
        raise
    return app, proxy


def stop(app, proxy) -> None:
    proxy.send_signal(3)  # SIGQUIT: close at once
    app.terminate()
    for p in (proxy, app):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def verdict(r: dict) -> tuple:
    return (r.get("behavior"), r.get("behaviorClose"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="run the whole suite")
    ap.add_argument("-p", "--parallelism", type=int, default=8)
    ap.add_argument("--wsdrain", default=os.environ.get("WSDRAIN_BIN", str(ROOT / "target/debug/wsdrain")))
    ap.add_argument("--keep", help="directory to keep the reports in")
    args = ap.parse_args()
    cases = [] if args.full else CI_CASES

    app_port, listen, admin = free_port(), free_port(), free_port()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="autobahn-"))
    app, proxy = start(args.wsdrain, app_port, listen, admin)
    try:
        started = time.time()
        direct = kosoku(app_port, out / "direct", cases, args.parallelism)
        through = kosoku(listen, out / "wsdrain", cases, args.parallelism)
        took = time.time() - started
    finally:
        stop(app, proxy)

    def case_key(c):
        return [int(x) for x in c.split(".")]

    compared, suspects, skipped = 0, [], []
    for case in sorted(direct, key=case_key):
        d = direct[case]
        if args.full and d.get("behavior") not in ("OK", "NON-STRICT", "INFORMATIONAL"):
            skipped.append(f"{case}: {verdict(d)} directly")
            continue
        compared += 1
        t = through.get(case)
        if t is None or verdict(t) != verdict(d):
            suspects.append((case, f"direct {verdict(d)} vs wsdrain {verdict(t) if t else 'missing'}"))

    differ, settled = [], []
    if suspects:
        app_port, listen, admin = free_port(), free_port(), free_port()
        app, proxy = start(args.wsdrain, app_port, listen, admin)
        try:
            for case, first in suspects:
                tries = [first]
                for n in range(RERUNS):
                    again = out / f"rerun-{case}-{n}"
                    d = kosoku(app_port, again / "direct", [case], 1).get(case)
                    t = kosoku(listen, again / "wsdrain", [case], 1).get(case)
                    d, t = verdict(d) if d else "missing", verdict(t) if t else "missing"
                    tries.append(f"direct {d} vs wsdrain {t}")
                    if d == t and d != "missing":
                        settled.append(f"{case}: " + "; then ".join(tries))
                        break
                else:
                    differ.append(f"{case}: " + "; then ".join(tries))
        finally:
            stop(app, proxy)

    print(f"autobahn: {compared} cases compared in {took:.0f}s, {len(differ)} differ, "
          f"{len(skipped)} not compared; reports in {out}")
    for line in skipped:
        print(f"  not compared (fails directly): {line}")
    for line in settled:
        print(f"  timing-dependent, matched on a re-run: {line}")
    for line in differ:
        print(f"  DIFFERS {line}")
    return 1 if differ or compared == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
