"""Honour wsdrain's reconnect hint in a client built on the `websockets` library.

When a pod behind wsdrain goes away, every client gets a close frame (1012 by default)
whose reason is ``{"reconnect_after_ms":N}``. wsdrain chooses N so that clients which
wait exactly N ms before reconnecting arrive evenly at the remaining pods. This module
reads the hint (from ``ConnectionClosed.rcvd.reason``) and decides how long to wait:
the hint when there is one, an exponential backoff with jitter when there is none, and
never a tight loop. Same semantics as the JavaScript helper (``clients/js``), but
delays are in seconds, as ``asyncio.sleep`` takes them.
"""

from __future__ import annotations

import json
import random
import time
from typing import Callable, Optional

__all__ = ["HINT_MAX_MS", "parse_hint", "reconnect_delay", "backoff_delay", "Reconnect"]

#: Hints above this (one hour, in ms) are not believed: the reason counts as no hint.
HINT_MAX_MS = 3_600_000


def parse_hint(reason: Optional[str]) -> Optional[int]:
    """The hint in a close reason in milliseconds, or None when it carries none.

    Only an integer ``reconnect_after_ms`` in ``[0, HINT_MAX_MS]`` inside a JSON object
    counts; anything else (no reason, other text, bad JSON, negative, fractional, huge,
    a boolean) is no hint.
    """
    if not reason or "reconnect_after_ms" not in reason:
        return None
    try:
        doc = json.loads(reason)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    n = doc.get("reconnect_after_ms")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= HINT_MAX_MS:
        return None
    return n


def reconnect_delay(closed: object, fallback: float) -> float:
    """Seconds to wait before reconnecting after ``closed``, or ``fallback`` without a hint.

    ``closed`` is a ``websockets.exceptions.ConnectionClosed`` (its ``rcvd`` is the close
    frame received, None when the connection ended without one); None also gives
    ``fallback``.
    """
    rcvd = getattr(closed, "rcvd", None)
    hint = parse_hint(getattr(rcvd, "reason", None))
    return fallback if hint is None else hint / 1000


def backoff_delay(
    attempt: int,
    base: float = 0.5,
    cap: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """The usual exponential backoff with jitter, in seconds: attempt k waits a random
    time in ``[1/2, 1] * min(cap, base * 2**k)``."""
    ceiling = min(cap, base * 2 ** min(attempt, 30))
    return ceiling * (0.5 + 0.5 * rand())


class Reconnect:
    """How long to wait before the next connection attempt, one instance per client.

    Call :meth:`opened` when a connection opens and :meth:`delay_after` when it ends (with
    the ``ConnectionClosed`` it ended with, or None when the attempt failed). A hint is
    followed exactly after a connection that stayed open ``min_uptime`` seconds, and
    after the first short-lived one; from the second short-lived connection in a row the
    wait is at least the backoff, so a server that keeps closing at once cannot make a
    tight loop.
    """

    def __init__(self, base: float = 0.5, cap: float = 30.0, min_uptime: float = 5.0):
        self.base, self.cap, self.min_uptime = base, cap, min_uptime
        self.short_streak = 0
        self._opened_at: Optional[float] = None

    def opened(self) -> None:
        """Records that a connection is open now."""
        self._opened_at = time.monotonic()

    def delay_after(self, closed: object = None) -> float:
        """Seconds to wait before the next attempt after a connection ended as ``closed``."""
        lived = -1.0 if self._opened_at is None else time.monotonic() - self._opened_at
        self._opened_at = None
        self.short_streak = 0 if lived >= self.min_uptime else self.short_streak + 1
        backoff = backoff_delay(self.short_streak, self.base, self.cap)
        hint = reconnect_delay(closed, -1.0)
        if hint < 0:
            return backoff
        if self.short_streak <= 1:
            return hint
        return max(hint, backoff)
