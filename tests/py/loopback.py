"""Loopback ports for the processes the tests and scripts start: one definition, used by
conftest.py (and through it every test) and by scripts/autobahn_compare.py."""

import socket
import time


def free_port() -> int:
    """A port free on 127.0.0.1 now (bound, read, released for a child process to take)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Returns once something accepts TCP on 127.0.0.1:port; TimeoutError after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")
