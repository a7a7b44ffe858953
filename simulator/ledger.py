"""What the simulator emitted and what each client did: the facts tests and e2e checks compare.

``Ledger``: per stream (platform, client id), every distinct event sent at least once, as dedup
key -> payload hash, in emission order. ``ClientStats``: per client, counters of its behaviour
towards the platform (the guide's traps are visible here: handshakes with expired tokens are the
infinite-401 loop, attempts before Retry-After are the thundering herd). ``OwnersTimeline``: per
stream, every connection opened and closed, in order, with when: how many clients held a stream
at any moment (cluster mode's "exactly one owner", its gaps and overlaps).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from simulator.events import Event
from simulator.settings import Platform


class StreamLedger:
    __slots__ = ("generated", "hashes", "order")

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self.order: list[str] = []
        self.generated = 0

    def record(self, event: Event) -> None:
        if not event.sent:
            event.sent = True
            self.hashes[event.key] = event.digest()
            self.order.append(event.key)


class Ledger:
    """Every distinct event emitted, per stream ``"platform/client_id"``."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamLedger] = {}

    @staticmethod
    def name(platform: Platform, client_id: str) -> str:
        return f"{platform}/{client_id}"

    def stream(self, platform: Platform, client_id: str) -> StreamLedger:
        return self.streams.setdefault(self.name(platform, client_id), StreamLedger())

    def keys(self, platform: Platform, client_id: str) -> set[str]:
        return set(self.stream(platform, client_id).hashes)

    def total(self) -> int:
        return sum(len(s.hashes) for s in self.streams.values())

    def to_json(self, stream: str | None = None, with_events: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, led in self.streams.items():
            if stream is not None and name != stream:
                continue
            doc: dict[str, Any] = {"count": len(led.hashes), "generated": led.generated}
            if with_events:
                doc["events"] = led.hashes
                doc["order"] = led.order
            out[name] = doc
        return {"streams": out}


@dataclass
class ClientStats:
    """Counters of one client's behaviour (and of what the simulator did to it)."""

    token_requests: int = 0
    token_grants: Counter[str] = field(default_factory=Counter)       # by grant type
    token_errors: Counter[int] = field(default_factory=Counter)       # by HTTP status
    early_token_requests: int = 0     # token requests before a Retry-After had elapsed
    handshakes: int = 0               # every upgrade request to a stream endpoint
    handshakes_opened: int = 0        # answered 101
    handshakes_expired_token: int = 0  # made with an expired or revoked token (a client defect)
    handshakes_invalid_token: int = 0  # missing or unreadable token
    early_handshakes: int = 0         # handshakes before a Retry-After had elapsed
    handshake_rejections: Counter[int] = field(default_factory=Counter)  # by HTTP status
    pings: int = 0
    pongs: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)   # close frames received
    closes_sent: Counter[int] = field(default_factory=Counter)   # close frames the server sent
    drops: Counter[str] = field(default_factory=Counter)         # no close frame: idle/silent/reset
    events_sent: int = 0
    duplicates_sent: int = 0
    heartbeats_sent: int = 0
    malformed_sent: Counter[str] = field(default_factory=Counter)
    gaps_served: int = 0              # resumes older than retention (or unreadable)
    faults: Counter[str] = field(default_factory=Counter)        # faults fired, by kind
    open_connections: int = 0
    max_open_connections: int = 0
    replaced: int = 0                 # single-session mode: closed because a newer one opened

    @property
    def early_attempts(self) -> int:
        return self.early_token_requests + self.early_handshakes

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = {str(k): v for k, v in value.items()} if isinstance(
                value, Counter) else value
        out["early_attempts"] = self.early_attempts
        return out


@dataclass(frozen=True)
class ConnectionEvent:
    """A connection of a stream opened (``delta`` +1) or closed (-1)."""

    t: float          # the simulator's event-loop clock (monotonic seconds)
    wall: float       # the server's clock (epoch seconds)
    stream: str       # "platform/client_id"
    connection: int   # the client's Nth connection, from 1
    delta: int
    peer: str = ""    # "host:port" of the client's socket


class OwnersTimeline:
    """Every connection of every stream, opened and closed, in order (``GET /_sim/owners``)."""

    def __init__(self) -> None:
        self.events: list[ConnectionEvent] = []
        self._open: Counter[str] = Counter()

    def opened(self, t: float, wall: float, stream: str, connection: int, peer: str = "") -> None:
        self._open[stream] += 1
        self.events.append(ConnectionEvent(t, wall, stream, connection, +1, peer))

    def closed(self, t: float, wall: float, stream: str, connection: int, peer: str = "") -> None:
        self._open[stream] -= 1
        self.events.append(ConnectionEvent(t, wall, stream, connection, -1, peer))

    def open_now(self, stream: str) -> int:
        return self._open[stream]

    def open_counts(self) -> dict[str, int]:
        return dict(self._open)

    def opened_since(self, stream: str, t: float) -> int:
        """Connections of ``stream`` opened at or after ``t``."""
        return sum(1 for e in self.events if e.stream == stream and e.delta > 0 and e.t >= t)

    def spans(self, stream: str, start: float, end: float) -> tuple[float, float]:
        """Within [start, end]: the longest time ``stream`` had no connection, and the longest
        time it had more than one."""
        count = sum(e.delta for e in self.events if e.stream == stream and e.t < start)
        longest = {0: 0.0, 2: 0.0}
        since = start
        for event in (e for e in self.events if e.stream == stream and start <= e.t <= end):
            kind = 0 if count <= 0 else 2 if count > 1 else 1
            if kind in longest:
                longest[kind] = max(longest[kind], event.t - since)
            count += event.delta
            since = event.t
        kind = 0 if count <= 0 else 2 if count > 1 else 1
        if kind in longest:
            longest[kind] = max(longest[kind], end - since)
        return longest[0], longest[2]

    def to_json(self, stream: str | None = None) -> dict[str, Any]:
        events = [asdict(e) for e in self.events if stream is None or e.stream == stream]
        return {"open": {s: n for s, n in self.open_counts().items()
                         if stream is None or s == stream}, "events": events}
