"""`wss://` through a TLS-terminating wsdrain with Python `websockets` and an `ssl`
context that trusts a test certificate (made with the openssl CLI): every client of a
drain gets close 1012 with a reconnect hint, inside TLS, and a clean close."""

import asyncio
import json
import shutil
import signal
import ssl
import subprocess

import pytest
import websockets

from conftest import start_wsdrain

N_CLIENTS = 30


@pytest.fixture
def cert(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (Debian package openssl)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(tmp_path / "tls.key"), "-out", str(tmp_path / "tls.crt")],
                   check=True, capture_output=True)
    return tmp_path


def client_context(cert_dir) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cert_dir / "tls.crt"))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def test_every_wss_client_of_a_drain_gets_1012_with_a_hint(echo_app, cert):
    proc, listen, _ = start_wsdrain(echo_app, "--tls-dir", str(cert),
                                    "--drain-delay", "200ms", "--drain-window", "1s")
    ctx = client_context(cert)

    async def run():
        clients = []
        for i in range(N_CLIENTS):
            ws = await websockets.connect(f"wss://localhost:{listen}/", ssl=ctx,
                                          open_timeout=10, close_timeout=10)
            await ws.send(f"hello {i}")
            assert await asyncio.wait_for(ws.recv(), 10) == f"hello {i}"
            assert ws.transport.get_extra_info("ssl_object").selected_alpn_protocol() \
                == "http/1.1"
            clients.append(ws)
        proc.p.send_signal(signal.SIGTERM)
        closes = []
        for ws in clients:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 20)
            # A clean close handshake: the proxy's close first, the client's answer.
            assert closed.value.rcvd is not None and closed.value.rcvd_then_sent
            closes.append((closed.value.rcvd.code, closed.value.rcvd.reason))
        return closes

    try:
        closes = asyncio.run(run())
        assert len(closes) == N_CLIENTS
        for code, reason in closes:
            assert code == 1012
            assert isinstance(json.loads(reason)["reconnect_after_ms"], int)
        assert proc.p.wait(15) == 0
    finally:
        proc.stop(signal.SIGQUIT)


def test_a_client_that_does_not_trust_the_certificate_is_refused_cleanly(echo_app, cert):
    proc, listen, admin = start_wsdrain(echo_app, "--tls-dir", str(cert))
    try:
        async def run():
            with pytest.raises(ssl.SSLCertVerificationError):
                await websockets.connect(f"wss://localhost:{listen}/",
                                         ssl=ssl.create_default_context(), open_timeout=10)
            # The proxy is still serving clients that do trust it.
            async with websockets.connect(f"wss://localhost:{listen}/",
                                          ssl=client_context(cert), open_timeout=10) as ws:
                await ws.send("still up")
                assert await asyncio.wait_for(ws.recv(), 10) == "still up"
        asyncio.run(run())
    finally:
        proc.stop(signal.SIGQUIT)
