"""The client's keep-alive clock: when to ping, when the connection is dead. Pure.

``docs/protocols.md`` §2: the client pings at most every 15 s (Genesys, we use
12 s) or 30 s (NICE, we use 25 s) and the server pongs within 2 s; a client that does not ping in
its window is dropped *without* a close frame. So pings go out every interval whatever else is
received, while any inbound frame (pong, event, heartbeat) proves the connection alive. Dead =
a ping is outstanding and nothing at all arrived for ``pong_timeout_s`` after it, which detects a
silent drop within interval + pong timeout.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Beat(enum.Enum):
    PING = "ping"
    DEAD = "dead"
    WAIT = "wait"


@dataclass(frozen=True)
class Tick:
    beat: Beat
    at: float  # PING/DEAD: now; WAIT: when to ask again


class KeepAlive:
    def __init__(self, interval_s: float, pong_timeout_s: float, now: float) -> None:
        self.interval_s = interval_s
        self.pong_timeout_s = pong_timeout_s
        self._last_ping = now  # the handshake counts as the first sign of life
        self._outstanding: float | None = None

    def inbound(self, now: float) -> None:
        """Any frame or pong arrived: the connection is alive."""
        self._outstanding = None

    def ping_sent(self, now: float) -> None:
        self._last_ping = now
        if self._outstanding is None:
            self._outstanding = now

    def next(self, now: float) -> Tick:
        if self._outstanding is not None:
            dead_at = self._outstanding + self.pong_timeout_s
            if now >= dead_at:
                return Tick(Beat.DEAD, now)
        ping_at = self._last_ping + self.interval_s
        if now >= ping_at:
            return Tick(Beat.PING, now)
        wake = ping_at
        if self._outstanding is not None:
            wake = min(wake, self._outstanding + self.pong_timeout_s)
        return Tick(Beat.WAIT, wake)
