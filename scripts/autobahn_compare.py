#!/usr/bin/env python3
"""Autobahn conformance through wsdrain: the same verdicts as directly against the app.

Runs the Autobahn fuzzing cases (kosoku, an Autobahn-compatible fuzzing client) against a
Python `websockets` echo app with compression on, once directly and once through
`wsdrain proxy`, and compares `behavior` and `behaviorClose` case by case.

    scripts/autobahn_compare.py              # CI selection: 1-7, 10, 12.1, 13.1
    scripts/autobahn_compare.py --full       # every case; compares the cases the app
                                             # passes directly and lists the others
    scripts/autobahn_compare.py --tls        # through wsdrain terminating TLS: kosoku
                                             # has no wss://, so it connects through
                                             # scripts/tls_client_shim.py

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


def make_cert(directory: Path) -> Path:
    """A throwaway certificate for localhost in `directory` (tls.crt, tls.key)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(directory / "tls.key"), "-out", str(directory / "tls.crt")],
                   check=True, capture_output=True)
    return directory


def start(wsdrain: str, app_port: int, listen: int, admin: int, tls_dir=None):
    """The echo app and wsdrain in front of it, all listening when this returns. With
    `tls_dir`, wsdrain terminates TLS and the TLS shim listens on `listen` instead."""
    app = subprocess.Popen([sys.executable, str(ROOT / "tests/py/echo_server.py"), "--port", str(app_port)],
                           stdout=subprocess.DEVNULL)
    proxy_port = free_port() if tls_dir else listen
    procs = [app, subprocess.Popen(
        [wsdrain, "proxy", "--listen", f"127.0.0.1:{proxy_port}",
         "--upstream", f"127.0.0.1:{app_port}", "--admin", f"127.0.0.1:{admin}",
         "--log-level", "error", *(["--tls-dir", str(tls_dir)] if tls_dir else [])])]
    if tls_dir:
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/tls_client_shim.py"), "--listen", str(listen),
             "--connect", f"127.0.0.1:{proxy_port}", "--cafile", str(tls_dir / "tls.crt")]))
    try:
        wait_port(app_port)
        wait_port(proxy_port)
        wait_port(listen)
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs) -> None:
    app, proxy, *shim = procs
    proxy.send_signal(3)  # SIGQUIT: close at once
    for p in (app, *shim):
        p.terminate()
    for p in procs:
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
    ap.add_argument("--tls", action="store_true",
                    help="wsdrain terminates TLS (a throwaway certificate; kosoku through the shim)")
    args = ap.parse_args()
    cases = [] if args.full else CI_CASES

    app_port, listen, admin = free_port(), free_port(), free_port()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="autobahn-"))
    tls_dir = None
    if args.tls:
        tls_dir = out / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        make_cert(tls_dir)
    procs = start(args.wsdrain, app_port, listen, admin, tls_dir)
    try:
        started = time.time()
        direct = kosoku(app_port, out / "direct", cases, args.parallelism)
        through = kosoku(listen, out / "wsdrain", cases, args.parallelism)
        took = time.time() - started
    finally:
        stop(procs)

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
        procs = start(args.wsdrain, app_port, listen, admin, tls_dir)
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
            stop(procs)

    over = " over TLS" if args.tls else ""
    print(f"autobahn{over}: {compared} cases compared in {took:.0f}s, {len(differ)} differ, "
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
