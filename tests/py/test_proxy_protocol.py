"""PROXY protocol headers written by wsdrain, read by an independent parser written from
HAProxy's spec (proxy-protocol.txt), and headers written here read by wsdrain."""

import ipaddress
import socket
import struct
import threading

import pytest

from conftest import Proc, free_port, metric, wait_port, wsdrain_bin

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed inside the header")
        data += chunk
    return data


def parse_header(conn):
    """Spec section 2.1 (v1) and 2.2 (v2); returns (version, src_ip, src_port, dst_ip, dst_port)."""
    first = read_exact(conn, 12)
    if first == V2_SIG:
        ver_cmd, fam, length = struct.unpack("!BBH", read_exact(conn, 4))
        assert ver_cmd == 0x21, f"version 2, PROXY command: {ver_cmd:#x}"
        body = read_exact(conn, length)
        if fam == 0x11:
            src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
        elif fam == 0x21:
            src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        else:
            raise AssertionError(f"family {fam:#x}")
        return 2, str(ipaddress.ip_address(src)), sport, str(ipaddress.ip_address(dst)), dport
    line = first
    while not line.endswith(b"\r\n"):
        line += read_exact(conn, 1)
        assert len(line) <= 107, "v1 header longer than 107 bytes"
    proto, fam, src, dst, sport, dport = line[:-2].decode("ascii").split(" ")
    assert proto == "PROXY" and fam in ("TCP4", "TCP6")
    return 1, src, int(sport), dst, int(dport)


class Upstream:
    """A TCP app that parses the PROXY header, records it, then echoes."""

    def __init__(self, http=False):
        self.http = http
        self.requests = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.headers = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        with conn:
            try:
                self.headers.append(parse_header(conn))
                if self.http:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        head += conn.recv(4096)
                    self.requests.append(head)
                    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                while data := conn.recv(65536):
                    conn.sendall(data)
            except (EOFError, OSError, AssertionError) as e:
                self.headers.append(("error", str(e)))


def start(upstream_port, *extra):
    listen, admin = free_port(), free_port()
    proc = Proc([wsdrain_bin(), "proxy", "--listen", f"127.0.0.1:{listen}",
                 "--upstream", f"127.0.0.1:{upstream_port}", "--admin", f"127.0.0.1:{admin}",
                 "--log-level", "error", *extra])
    wait_port(admin)
    return proc, listen, admin


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tcp_mode_sends_the_client_address(version):
    up = Upstream()
    proc, listen, _ = start(up.port, "--mode", "tcp", "--proxy-protocol", version)
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            c.sendall(b"hello")
            assert read_exact(c, 5) == b"hello"
            client_port = c.getsockname()[1]
        assert up.headers[0] == (int(version[1]), "127.0.0.1", client_port, "127.0.0.1", listen)
    finally:
        proc.stop(3)


def test_websocket_upgrade_carries_the_header_and_accepts_one_from_a_balancer():
    up = Upstream(http=True)
    proc, listen, admin = start(up.port, "--proxy-protocol", "v1", "--accept-proxy-protocol")
    try:
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            # A v2 header as an AWS NLB would send it, built here from the spec.
            header = V2_SIG + struct.pack("!BBH", 0x21, 0x11, 12) + struct.pack(
                "!4s4sHH", bytes([198, 51, 100, 23]), bytes([10, 1, 2, 3]), 55555, 15080)
            c.sendall(header + b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      b"Sec-WebSocket-Version: 13\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += c.recv(4096)
        assert data.startswith(b"HTTP/1.1 101"), data
        assert up.headers[0][:3] == (1, "198.51.100.23", 55555), up.headers
        assert b"x-forwarded-for: 198.51.100.23\r\n" in up.requests[0].lower(), up.requests
        # A connection without the header is refused and counted.
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = c.recv(100)
            except ConnectionResetError:  # closed with our request unread: a reset
                answer = b""
            assert answer == b"", "no HTTP answer without a PROXY header"
        assert metric(admin, 'websocket_errors_total{kind="proxy_protocol"}') == 1
    finally:
        proc.stop(3)
