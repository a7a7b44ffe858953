"""How far a stream has safely got: the resume point covered by Kafka acknowledgements. Pure.

Kafka acknowledges sends out of order (one batch per partition), but a resume point is only safe
when *every* record the stream sent before it is acknowledged (``docs/kafka.md``: "a cursor is
written only after every event up to it has been acknowledged"). So each send is tracked in
arrival order under a sequence number; the acknowledged *prefix* decides the resume point; a
failed send blocks the prefix until ``rewind()`` (before a reconnect) makes the platform replay
it. DLQ records are tracked too (position ``None``): a bad frame is not lost either.

NICE (``CursorProgress``): the resume point is the cursor of the last event of the prefix; the
platform replays everything after it, exactly.

Genesys (``SinceProgress``): ``since=T`` replays ``timestamp >= T``, but across correlation ids
timestamps arrive out of order, so "the latest timestamp acknowledged" is NOT safe: an event with
an older timestamp may still be in flight, or not even received yet. The rule:

    since = max(floor, min(max_ts(received) - lateness, min_ts(not yet acknowledged)))

* ``min_ts(not yet acknowledged)``: every received event that Kafka has not confirmed is
  replayed, whatever its timestamp (they are ``>= since``).
* ``- lateness`` (``ConnectorSettings.since_lateness_s``): an event not received yet is assumed to
  be at most ``lateness`` older than the newest one already seen. This is the one assumption;
  an event later than that is logged (``stream.late_event``) and counted as late.
* ``floor``: the previous resume point. Everything before it was covered when it was computed,
  so the resume point never moves back.
Duplicates this causes are normal (both platforms are at-least-once) and removed downstream;
losses are not acceptable, so the rule errs towards replaying more.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

from ccstream.records import rfc3339

Position = str | float | None


class _State(enum.Enum):
    PENDING = 0
    ACKED = 1
    FAILED = 2


@dataclass(slots=True)
class _Entry:
    position: Position
    state: _State
    epoch: float | None = None   # the event's timestamp, when readable (gap detection)


class Progress:
    """Sends of one stream in arrival order; subclasses fold positions into a resume point."""

    def __init__(self) -> None:
        self._next = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self.late = 0

    def track(self, position: Position, epoch: float | None = None) -> int:
        """A record was handed to the producer; returns its sequence number.

        ``epoch`` is the event's own timestamp (both platforms): it only serves
        ``replay_anchor()``; Genesys positions are that timestamp already.
        """
        seq = self._next
        self._next += 1
        self._entries[seq] = _Entry(position, _State.PENDING,
                                    epoch if epoch is not None else _epoch_of(position))
        self._observe(position)
        return seq

    def ack(self, seq: int) -> None:
        entry = self._entries.get(seq)
        if entry is None:
            return  # forgotten by rewind(): a late acknowledgement of a replayed record
        entry.state = _State.ACKED
        while self._entries:
            head, first = next(iter(self._entries.items()))
            if first.state is not _State.ACKED:
                break
            del self._entries[head]
            self._fold(first.position)

    def fail(self, seq: int) -> None:
        entry = self._entries.get(seq)
        if entry is not None:
            entry.state = _State.FAILED

    @property
    def unacknowledged(self) -> int:
        return len(self._entries)

    @property
    def failed(self) -> bool:
        return any(e.state is _State.FAILED for e in self._entries.values())

    def rewind(self) -> str | None:
        """Before a reconnect: pin the resume point and forget what is not acknowledged.

        The platform replays from the returned point, which covers every forgotten record.
        """
        point = self.resume_point()
        self._pin(point)
        self._entries.clear()
        return point

    def resume_point(self) -> str | None:
        raise NotImplementedError

    def replay_anchor(self) -> float | None:
        """The timestamp of the earliest event already received that the platform must send
        again from ``resume_point()`` (None when no such event is known): see ``gaps``."""
        raise NotImplementedError

    def _first_unacknowledged_epoch(self) -> float | None:
        for entry in self._entries.values():
            if entry.position is not None and entry.epoch is not None:
                return entry.epoch
        return None

    def _observe(self, position: Position) -> None:
        """Hook: a new position was received (before it is acknowledged)."""

    def _fold(self, position: Position) -> None:
        raise NotImplementedError

    def _pin(self, point: str | None) -> None:
        raise NotImplementedError

    def _pending_positions(self) -> list[Position]:
        return [e.position for e in self._entries.values() if e.position is not None]


def _epoch_of(position: Position) -> float | None:
    return position if isinstance(position, float) else None


class CursorProgress(Progress):
    def __init__(self, resume: str | None) -> None:
        super().__init__()
        self._cursor = resume

    def resume_point(self) -> str | None:
        return self._cursor

    def _fold(self, position: Position) -> None:
        if isinstance(position, str):
            self._cursor = position

    def _pin(self, point: str | None) -> None:
        self._cursor = point

    def replay_anchor(self) -> float | None:
        # the cursor is exact: the first event received after it and not acknowledged is its
        # successor, which the platform replays first (events at or before C may come before
        # it, and are older). With everything acknowledged the successor is unknown.
        return self._first_unacknowledged_epoch()


class SinceProgress(Progress):
    def __init__(self, floor: float | None, lateness_s: float) -> None:
        super().__init__()
        self._floor = floor
        self._lateness_s = lateness_s
        self._prefix_max: float | None = None
        self._seen_max: float | None = None  # newest timestamp received (since the last pin)

    def _observe(self, position: Position) -> None:
        if not isinstance(position, float):
            return
        if self._floor is not None and position < self._floor:
            self.late += 1
        if self._seen_max is None or position > self._seen_max:
            self._seen_max = position

    def _fold(self, position: Position) -> None:
        if isinstance(position, float) and (
            self._prefix_max is None or position > self._prefix_max
        ):
            self._prefix_max = position

    def resume_epoch(self) -> float | None:
        # the lateness bound counts from the newest timestamp *received*, acknowledged or not:
        # counted from the acknowledged prefix only, the point was the first pending event's
        # timestamp until that was acknowledged, then fell ``lateness`` below it (a committed
        # cursor moving back, and a first commit above what the assumption allows)
        candidates: list[float] = [p for p in self._pending_positions() if isinstance(p, float)]
        if self._seen_max is not None:
            candidates.append(self._seen_max - self._lateness_s)
        if not candidates:
            return self._floor
        point = min(candidates)
        return point if self._floor is None else max(self._floor, point)

    def resume_point(self) -> str | None:
        epoch = self.resume_epoch()
        return None if epoch is None else rfc3339(epoch)

    def replay_anchor(self) -> float | None:
        # every retained event with timestamp >= since comes again: the earliest one received
        # (not acknowledged yet, or the newest acknowledged) must be among the first replayed
        since = self.resume_epoch()
        known = [p for p in self._pending_positions() if isinstance(p, float)]
        if self._prefix_max is not None:
            known.append(self._prefix_max)
        known = [p for p in known if since is None or p >= since]
        return min(known) if known else None

    def _pin(self, point: str | None) -> None:
        # computed while the forgotten records still count, so the floor covers them; the
        # newest timestamp is forgotten too, or the watermark could jump past a forgotten
        # record before the platform has replayed it
        self._floor = self.resume_epoch()
        self._prefix_max = None
        self._seen_max = None
