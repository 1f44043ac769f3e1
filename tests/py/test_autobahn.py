"""Protocol conformance comes from an outside suite: the Autobahn fuzzing cases must get
the same verdicts through wsdrain as directly against the same echo app, in plaintext and
with wsdrain terminating TLS (kosoku has no wss://; it connects through
scripts/tls_client_shim.py, which opens the TLS session to wsdrain)."""

import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, wsdrain_bin


def compare(*flags: str) -> int:
    """Runs the comparison; returns how many cases it compared."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/autobahn_compare.py"), "--wsdrain", wsdrain_bin(),
         *flags],
        capture_output=True, text=True, timeout=900,
    )
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    return int(result.stdout.split(" cases compared")[0].split()[-1])


def test_autobahn_verdicts_match_direct():
    compared = compare()
    assert compared >= 250, f"expected the CI selection (~280 cases), compared {compared}"


def test_autobahn_verdicts_match_direct_over_tls():
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl): no test certificate")
    compared = compare("--tls")
    assert compared >= 250, f"expected the CI selection (~280 cases), compared {compared}"
