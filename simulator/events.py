"""Events of one simulated stream, pure: a seeded factory and a log with a retention buffer.

The factory makes realistic events (docs/protocols.md, "Frames from the server") for a pool of live
interactions (correlation ids) that end and are replaced. Its timestamp rule makes the contract's
dedup key ``(eventType, correlationId, timestamp)`` identify an event: the stream's timestamps
never go back, and one correlation id never gets two events in the same millisecond, so that
events of one correlation id are strictly ordered in time (the contract's per-interaction order).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import random
from datetime import UTC, datetime

import orjson

from ccstream.records import dedup_key
from simulator.settings import Platform

_AGENTS = 40
_QUEUES = ("sales", "support", "billing", "retention", "vip")
_STATES = ("available", "busy", "after_call_work", "break", "offline")
_AGENT_IDS = tuple(f"agent-{i:03d}" for i in range(_AGENTS))


def rfc3339_ms(ts_ms: int) -> str:
    """``2024-01-15T10:30:00.000Z`` (the contract's ``since`` form) from epoch milliseconds."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{ts_ms % 1000:03d}Z"
    )


def parse_rfc3339_ms(text: str) -> int | None:
    """Epoch milliseconds of an RFC 3339 UTC time, or None if it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return round(moment.timestamp() * 1000)


class Event:
    """One event as the platform sends it; ``frame`` is the exact bytes of its text frame."""

    __slots__ = ("corr", "event_type", "frame", "key", "sent", "seq", "ts_ms")

    def __init__(self, seq: int, ts_ms: int, event_type: str, corr: str, frame: bytes, *,
                 timestamp: str | None = None) -> None:
        self.seq = seq
        self.ts_ms = ts_ms
        self.event_type = event_type
        self.corr = corr
        self.frame = frame
        self.key = dedup_key(event_type, corr, timestamp or rfc3339_ms(ts_ms))
        self.sent = False

    def digest(self) -> str:
        """The ledger's payload hash: sha256 of the frame bytes, 16 hex characters."""
        return hashlib.sha256(self.frame).hexdigest()[:16]


def encode_cursor(tag: str, seq: int) -> str:
    """NICE cursors are opaque to the client; ours name the stream and the event's position."""
    return base64.urlsafe_b64encode(f"{tag}:{seq}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str, tag: str) -> int | None:
    """The position a cursor names, or None if it is not a cursor of this stream."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        cursor_tag, seq = text.rsplit(":", 1)
        return int(seq) if cursor_tag == tag else None
    except (ValueError, UnicodeDecodeError):
        return None


class EventFactory:
    """Makes the events of one stream, seeded: same seed, same events."""

    def __init__(self, platform: Platform, types: tuple[str, ...], correlation_ids: int,
                 rng: random.Random, tag: str) -> None:
        self._platform = platform
        self._types = types
        self._rng = rng
        self.tag = tag
        self._pool = [self._new_corr() for _ in range(correlation_ids)]
        self._last_ms: dict[str, int] = {}
        self._left: dict[str, int] = {c: rng.randint(2, 12) for c in self._pool}
        self._stream_ms = 0
        self._ts_cache = (-1, "")

    def _new_corr(self) -> str:
        return f"{self._rng.getrandbits(32):08x}-{self._rng.getrandbits(48):012x}"

    def _pick(self, ts_ms: int) -> tuple[int, str]:
        # a correlation id gets at most one event per millisecond (dedup-key uniqueness); with
        # the pool exhausted for this millisecond the stream moves to the next one
        random_ = self._rng.random
        size = len(self._pool)
        while True:
            for _ in range(8):
                slot = int(random_() * size)  # randrange is 4x slower; this is the hot path
                corr = self._pool[slot]
                if self._last_ms.get(corr, -1) < ts_ms:
                    return slot, corr
            ts_ms += 1

    def _timestamp(self, ts_ms: int) -> str:
        if self._ts_cache[0] != ts_ms:
            self._ts_cache = (ts_ms, rfc3339_ms(ts_ms))
        return self._ts_cache[1]

    def make(self, seq: int, now_ms: int) -> Event:
        ts_ms = max(now_ms, self._stream_ms)
        slot, corr = self._pick(ts_ms)
        ts_ms = max(ts_ms, self._last_ms.get(corr, -1) + 1)
        self._stream_ms = ts_ms
        self._last_ms[corr] = ts_ms
        rnd = self._rng.random
        event_type = self._types[int(rnd() * len(self._types))]
        timestamp = self._timestamp(ts_ms)
        frame = self._frame(seq, event_type, corr, timestamp)
        self._left[corr] -= 1
        if self._left[corr] <= 0:  # the interaction ends; a new one takes its slot
            del self._left[corr], self._last_ms[corr]
            fresh = self._new_corr()
            self._pool[slot] = fresh
            self._left[fresh] = self._rng.randint(2, 12)
        return Event(seq, ts_ms, event_type, corr, frame, timestamp=timestamp)

    def _body(self, corr: str) -> dict[str, object]:
        rnd = self._rng.random
        return {
            "conversationId": corr, "agentId": _AGENT_IDS[int(rnd() * _AGENTS)],
            "queue": _QUEUES[int(rnd() * len(_QUEUES))],
            "state": _STATES[int(rnd() * len(_STATES))],
            "durationMs": 100 + int(rnd() * 600_000),
        }

    def _frame(self, seq: int, event_type: str, corr: str, timestamp: str) -> bytes:
        if self._platform == "genesys":
            return orjson.dumps({"eventType": event_type, "correlationId": corr,
                                 "timestamp": timestamp, "eventBody": self._body(corr)})
        return orjson.dumps({
            "eventId": f"{self.tag}-{seq}", "eventType": event_type, "correlationId": corr,
            "timestamp": timestamp, "cursor": encode_cursor(self.tag, seq),
            "data": self._body(corr),
        })


class EventLog:
    """The retained events of one stream, by position (``seq``) and by time.

    A list with a moving head rather than a deque: positions are O(1) and ``bisect`` works, and
    the dropped head is cut off in bulk (amortised O(1) per event).
    """

    def __init__(self, max_events: int) -> None:
        self._events: list[Event] = []
        self._head = 0
        self._max = max_events
        self.next_seq = 0
        # the newest timestamp that retention dropped: a resume point at or before it has a gap
        self.evicted_ms = -1
        self.evicted_unsent = 0

    def __len__(self) -> int:
        return len(self._events) - self._head

    @property
    def first_seq(self) -> int:
        return self._events[self._head].seq if len(self) else self.next_seq

    def oldest(self) -> Event | None:
        return self._events[self._head] if len(self) else None

    def append(self, event: Event) -> None:
        self._events.append(event)
        self.next_seq = event.seq + 1
        if len(self) > self._max:
            self._drop()

    def _drop(self) -> None:
        old = self._events[self._head]
        self._head += 1
        self.evicted_ms = max(self.evicted_ms, old.ts_ms)
        self.evicted_unsent += not old.sent
        if self._head > 4096 and self._head * 2 > len(self._events):
            del self._events[:self._head]
            self._head = 0

    def expire(self, oldest_ms: int) -> None:
        """Drop events older than ``oldest_ms`` (retention by age)."""
        while len(self) and self._events[self._head].ts_ms < oldest_ms:
            self._drop()

    def purge(self, keep: int) -> None:
        """Keep only the newest ``keep`` events (the ``purge`` fault: retention shrinks now)."""
        while len(self) > keep:
            self._drop()

    def get(self, seq: int) -> Event | None:
        index = seq - self.first_seq
        return self._events[self._head + index] if 0 <= index < len(self) else None

    def seq_since(self, since_ms: int) -> int:
        """Position of the first retained event with timestamp >= ``since_ms`` (inclusive)."""
        index = bisect.bisect_left(self._events, since_ms, lo=self._head, key=lambda e: e.ts_ms)
        return self.first_seq + index - self._head

    def batch(self, seq: int, limit: int) -> list[Event]:
        """Up to ``limit`` events from position ``seq`` (or the oldest retained, if later)."""
        start = self._head + max(seq, self.first_seq) - self.first_seq
        return self._events[start:start + limit]
