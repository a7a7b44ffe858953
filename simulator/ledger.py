"""What the simulator emitted and what each client did: the facts tests and e2e checks compare.

``Ledger``: per stream (platform, client id), every distinct event sent at least once, as dedup
key -> payload hash, in emission order. ``ClientStats``: per client, counters of its behaviour
towards the platform (the guide's traps are visible here: handshakes with expired tokens are the
infinite-401 loop, attempts before Retry-After are the thundering herd).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
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
