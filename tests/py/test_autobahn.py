"""Protocol conformance comes from an outside suite: the Autobahn fuzzing cases must get
the same verdicts through wsdrain as directly against the same echo app."""

import subprocess
import sys

from conftest import ROOT, wsdrain_bin


def test_autobahn_verdicts_match_direct():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/autobahn_compare.py"), "--wsdrain", wsdrain_bin()],
        capture_output=True, text=True, timeout=900,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    compared = int(result.stdout.split("autobahn: ")[1].split()[0])
    assert compared >= 250, f"expected the CI selection (~280 cases), compared {compared}"
