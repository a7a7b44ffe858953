"""Shared vocabulary of the Genesys Cloud simulator, pure: random-source protocol, ids, times,
the topic grammar (``genesys-cloud.md`` s.4) and the normalised error body (s.3).

No clock, no random module: callers pass ``now`` (epoch seconds) and an ``Rng``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ccstream.records import rfc3339

_T = TypeVar("_T")


class Rng(Protocol):
    """What the simulator needs of a random source (``random.Random`` satisfies it)."""

    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def uniform(self, a: float, b: float) -> float: ...
    def choice(self, seq: Sequence[_T]) -> _T: ...
    def expovariate(self, lambd: float) -> float: ...
    def getrandbits(self, k: int) -> int: ...
    def shuffle(self, x: MutableSequence[Any]) -> None: ...


def new_uuid(rng: Rng) -> str:
    """A version-4 UUID drawn from ``rng`` (seeded: the same seed gives the same ids)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso_ms(epoch_s: float) -> str:
    """``2024-01-15T10:30:00.000Z``: the form of ``expires``, analytics times, intervals."""
    return rfc3339(epoch_s)


def parse_iso(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with an offset (``Z`` included); ValueError if not."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"no time zone in {text!r}")
    return moment.timestamp()


def parse_interval(text: str) -> tuple[float, float]:
    """``<from>/<to>`` (s.7) -> epoch seconds; ValueError if unreadable or empty."""
    start, sep, end = text.partition("/")
    if not sep:
        raise ValueError(f"not an interval: {text!r}")
    a, b = parse_iso(start), parse_iso(end)
    if b <= a:
        raise ValueError(f"empty interval: {text!r}")
    return a, b


# -- topics (s.4): v2.<resource>.<id>.<event>, and the combined form prefix?s1&s2 ---------------
QUEUE_EVENTS = ("conversations",)
USER_EVENTS = ("presence", "routingStatus", "conversations")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# which permission a topic family needs (modelled names, shown in ``missingPermissions``)
PERMISSIONS = {
    "queues": ("routing:queue:view", "analytics:queueObservation:view"),
    "presence": ("presence:userPresence:view",),
    "routingStatus": ("routing:agent:view",),
    "conversations": ("conversation:communication:view",),
}


def expand(topic: str) -> list[str]:
    """The single topic names of an id: ``v2.users.U?presence&routingStatus`` gives two; a plain
    id gives itself. Frames carry the single names (s.4, *modelled*)."""
    prefix, sep, tail = topic.partition("?")
    if not sep:
        return [topic]
    return [f"{prefix}.{part}" for part in tail.split("&")]


@dataclass(frozen=True)
class Topic:
    """A single topic name of an org: ``kind`` is ``queues`` or ``users``."""

    kind: str
    entity: str
    event: str


def parse_topic(name: str) -> Topic | None:
    """``v2.routing.queues.{id}.conversations`` or ``v2.users.{id}.{event}``; None otherwise."""
    parts = name.split(".")
    if (len(parts) == 5 and parts[:3] == ["v2", "routing", "queues"]
            and parts[4] in QUEUE_EVENTS and _UUID.fullmatch(parts[3])):
        return Topic("queues", parts[3], parts[4])
    if (len(parts) == 4 and parts[:2] == ["v2", "users"] and parts[3] in USER_EVENTS
            and _UUID.fullmatch(parts[2])):
        return Topic("users", parts[2], parts[3])
    return None


def queue_topic(queue_id: str) -> str:
    return f"v2.routing.queues.{queue_id}.conversations"


def user_topic(user_id: str, event: str) -> str:
    return f"v2.users.{user_id}.{event}"


# -- the normalised error body (s.3: 429s normalised 2021-11; 401/404 the same shape) ------------
ERROR_CODES = {
    400: "bad.request", 401: "bad.credentials", 403: "missing.permissions", 404: "not.found",
    405: "method.not.allowed", 429: "too.many.requests.retry.after",
    500: "internal.server.error", 502: "bad.gateway", 503: "service.unavailable",
    504: "gateway.timeout",
}


def error_body(status: int, message: str, context_id: str) -> dict[str, Any]:
    return {"message": message, "code": ERROR_CODES.get(status, "error"), "status": status,
            "contextId": context_id, "details": [], "errors": []}
