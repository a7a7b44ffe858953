"""One simulated stream (platform, client id): its event log, its generator, its listeners.

A stream generates from simulator start whether anybody listens or not, as a platform does: that
is why a client that was away must resume. Connections do not get their own queues: each keeps a
position in the shared log and is woken when the log grows, so replay and live are one path and a
slow connection only falls behind (until retention passes it: a gap, as on the real platforms).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from typing import Protocol

from simulator.events import Event, EventFactory, EventLog
from simulator.ledger import StreamLedger
from simulator.settings import Platform, SimSettings


class Listener(Protocol):
    def wake(self) -> None: ...


class Stream:
    def __init__(self, platform: Platform, client_id: str, rate: float, settings: SimSettings,
                 ledger: StreamLedger) -> None:
        self.platform = platform
        self.client_id = client_id
        self.rate = rate
        self.ledger = ledger
        self._settings = settings
        # crc32, not hash(): str hashes are salted per process, and a seed must replay the same
        tag = f"{platform[0]}{zlib.crc32(f'{settings.seed}:{client_id}'.encode()):08x}"
        self.factory = EventFactory(
            platform, settings.event_types(platform), settings.correlation_ids,
            random.Random(f"{settings.seed}:{platform}:{client_id}"), tag,
        )
        self.log = EventLog(settings.retention_events)
        self.listeners: set[Listener] = set()
        self._carry = 0.0

    def emit(self, count: int, now_s: float) -> list[Event]:
        """Append ``count`` events stamped ``now_s`` (server clock) and wake every listener."""
        now_ms = int(now_s * 1000)
        made = []
        for _ in range(count):
            event = self.factory.make(self.log.next_seq, now_ms)
            self.log.append(event)
            made.append(event)
        self.ledger.generated += count
        if made:
            for listener in self.listeners:
                listener.wake()
        return made

    def tick(self, dt_s: float, now_s: float) -> int:
        """Generate what ``rate`` owes for ``dt_s`` seconds, apply retention by age."""
        owed = self.rate * dt_s + self._carry
        count = int(owed)
        self._carry = owed - count
        if count:
            self.emit(count, now_s)
        self.log.expire(int((now_s - self._settings.scaled(self._settings.retention_s)) * 1000))
        return count

    def start_seq_since(self, since_ms: int | None) -> tuple[int, bool]:
        """Genesys: where a connection with ``since`` starts, and whether that skips a gap.

        Contract: every retained event with ``timestamp >= since`` (inclusive); a ``since`` older
        than retention starts at the oldest retained event (a gap the client must report).
        """
        if since_ms is None:  # unreadable: as if older than retention
            return self.log.first_seq, True
        gap = since_ms <= self.log.evicted_ms
        return self.log.seq_since(since_ms), gap

    def start_seq_cursor(self, seq: int | None, rewind: Callable[[], int]) -> tuple[int, bool]:
        """NICE: after the cursor's event, re-sending up to ``rewind()`` events at or before it.

        An unreadable cursor, or one whose successor retention dropped, starts at the oldest
        retained event (a gap).
        """
        if seq is None:
            return self.log.first_seq, True
        gap = seq + 1 < self.log.first_seq
        return max(self.log.first_seq, seq + 1 - rewind()), gap
