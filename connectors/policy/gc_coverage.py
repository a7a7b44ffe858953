"""Coverage, gaps and the watermark of one Genesys Cloud stream. Pure: wall times in, gaps out.

genesys-cloud contract §6. Genesys Cloud has no replay: what is published while no socket
listens is gone, so the source keeps the server's view of coverage itself.

* A channel *slot* (one of the C packed topic lists) is covered while one of its sockets is: from
  the later of the handshake and the PUT answer that first made its topics ``Permitted`` on that
  channel, until the close frame or a 404 frame arrives; a socket ending with neither (reset,
  read error, dead) covers until its last frame. Sockets of one slot overlap during a
  make-before-break, so a slot is covered over the union of its sockets.
* An instant is covered when every slot holding ``Permitted`` topics is. A slot counts from its
  first coverage (set-up is not a gap: "with no cursor, no gap"); with a cursor, every slot counts
  from the watermark on (down time is a gap, reason ``process_down``).
* A maximal uncovered stretch (a = last covered instant, b = next) is the gap ``[a - 2, b + 2]``,
  returned when it closes (at b); the driver reports it and hands it to backfill (``GapBook``).
* The watermark W is the greatest instant such that everything up to W is covered or in a
  recorded gap and every live record received up to W is acknowledged: the minimum of what each
  slot is *known* to cover (an open socket only up to its last frame: it may yet turn out to have
  died silently), the start of an open gap, and the receipt of the oldest unacknowledged live
  record. It never moves back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ccstream.timefmt import rfc3339
from connectors.policy.intervals import Interval, merge
from connectors.policy.progress import Position, Progress

MARGIN_S = 2.0          # the gap's skew margin on both sides (§6)
ACK_EPSILON_S = 0.001   # W stays strictly before a record Kafka has not acknowledged
REASONS = ("process_down", "socket_closed", "socket_dead", "channel_gone", "replaced",
           "subscribe_failed")


@dataclass(frozen=True)
class Gap:
    start: float
    end: float
    reason: str

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def interval(self) -> Interval:
        return (self.start, self.end)

    def describe(self) -> dict[str, object]:
        """The fields of ``stream.gap``."""
        return {"from": rfc3339(self.start), "to": rfc3339(self.end),
                "seconds": round(self.seconds, 3), "reason": self.reason}


@dataclass
class _Socket:
    start: float
    last: float     # the latest instant it is known to cover (its last frame)


@dataclass
class _Slot:
    sockets: dict[int, _Socket] = field(default_factory=dict)
    tracked: bool = False           # counts towards the stream's coverage
    required: bool = True           # holds Permitted topics
    since: float | None = None      # uncovered since (tracked, no socket)
    reason: str = ""


class Coverage:
    """The coverage of one stream's slots (see the module docstring)."""

    def __init__(self, slots: int, watermark: float | None) -> None:
        self._slots = [_Slot() for _ in range(slots)]
        self._watermark = watermark
        self._stretch: tuple[float, str] | None = None   # the open gap: (a, reason)
        if watermark is not None:
            # §6: at start with a cursor the first gap is [watermark - 2, first covered + 2]
            for slot in self._slots:
                slot.tracked, slot.since, slot.reason = True, watermark, "process_down"
            self._stretch = (watermark, "process_down")

    # -- events ----------------------------------------------------------------------------------
    def opened(self, slot: int, sock: int, start: float) -> Gap | None:
        """Socket ``sock`` of ``slot`` covers from ``start``; the gap this closes, if any."""
        state = self._slots[slot]
        state.sockets[sock] = _Socket(start, start)
        if not state.tracked:
            state.tracked, state.since = True, None
            return None
        if state.since is None:
            return None
        return self._cover(state, max(start, state.since))

    def seen(self, slot: int, sock: int, at: float) -> None:
        """A frame arrived on ``sock`` at ``at``: it covers at least until then."""
        found = self._slots[slot].sockets.get(sock)
        if found is not None and at > found.last:
            found.last = at

    def closed(self, slot: int, sock: int, end: float, reason: str) -> Gap | None:
        """``sock`` stopped covering at ``end`` (close frame, 404 frame, or its last frame)."""
        state = self._slots[slot]
        if state.sockets.pop(sock, None) is None or not state.tracked:
            return None
        if state.sockets and min(s.start for s in state.sockets.values()) <= end:
            return None  # another socket of the slot already covers (make-before-break)
        self._uncover(state, end, reason)
        if state.sockets:  # a later socket opened before this one was known to end: a hole
            return self._cover(state, min(s.start for s in state.sockets.values()))
        return None

    def required(self, slot: int, required: bool, now: float) -> Gap | None:
        """Whether ``slot`` holds Permitted topics (a slot of only Rejected topics is out of
        coverage, §3). Dropping an uncovered slot may close the open gap; a slot required again
        counts from its next coverage."""
        state = self._slots[slot]
        if required == state.required:
            return None
        state.required = required
        if required:
            if not state.sockets:
                state.tracked, state.since = False, None
            return None
        state.since = None
        return self._maybe_close(now)

    # -- queries ----------------------------------------------------------------------------
    def covered(self) -> bool:
        return all(s.since is None for s in self._counted())

    @property
    def open_gap_start(self) -> float | None:
        return None if self._stretch is None else self._stretch[0] - MARGIN_S

    def watermark(self, oldest_unacked: float | None) -> float | None:
        """W now (never before the last W returned); None before anything is known."""
        candidates = []
        for state in self._counted():
            if state.since is not None:
                candidates.append(state.since - MARGIN_S)
            elif state.sockets:
                candidates.append(max(s.last for s in state.sockets.values()))
        if self._stretch is not None:
            candidates.append(self._stretch[0] - MARGIN_S)
        if not candidates:
            return self._watermark
        if oldest_unacked is not None:
            candidates.append(oldest_unacked - ACK_EPSILON_S)
        point = min(candidates)
        if self._watermark is None or point > self._watermark:
            self._watermark = point
        return self._watermark

    # -- the stream's stretch -------------------------------------------------------------------
    def _counted(self) -> list[_Slot]:
        return [s for s in self._slots if s.tracked and s.required]

    def _uncover(self, state: _Slot, at: float, reason: str) -> None:
        state.since, state.reason = at, reason
        if not state.required:
            return
        if self._stretch is None or at < self._stretch[0]:
            # a is the stream's last covered instant: the slot that lost coverage first
            self._stretch = (at, reason)

    def _cover(self, state: _Slot, at: float) -> Gap | None:
        state.since = None
        return self._maybe_close(at)

    def _maybe_close(self, at: float) -> Gap | None:
        if self._stretch is None or not self.covered():
            return None
        a, reason = self._stretch
        self._stretch = None
        b = max(at, a)
        return Gap(a - MARGIN_S, b + MARGIN_S, reason)


class GapBook:
    """Gaps waiting for backfill, oldest first, one at a time (§7); what ``open_gaps`` holds."""

    def __init__(self, gaps: Iterable[Interval] = ()) -> None:
        self._pending: list[Interval] = merge(gaps)
        self.active: Interval | None = None

    def add(self, interval: Interval) -> None:
        self._pending = merge([*self._pending, interval])

    def due(self, now: float, settle_s: float) -> Interval | None:
        """The oldest gap whose ``to + settle_s`` has passed (§7), if none is being filled."""
        if self.active is None and self._pending and now >= self._pending[0][1] + settle_s:
            return self._pending[0]
        return None

    def next_due_at(self, settle_s: float) -> float | None:
        return self._pending[0][1] + settle_s if self._pending else None

    def start(self, interval: Interval) -> None:
        self._pending.remove(interval)
        self.active = interval

    def done(self) -> None:
        """Kafka acknowledged every record of the active gap: it leaves ``open_gaps``."""
        self.active = None

    def abort(self) -> None:
        """The active gap was cut (shutdown, Kafka): it is redone in full."""
        if self.active is not None:
            self._pending = merge([*self._pending, self.active])
            self.active = None

    def open_gaps(self) -> list[Interval]:
        active = [self.active] if self.active is not None else []
        return sorted([*active, *self._pending])


class ReceiptProgress(Progress):
    """Sends in arrival order, positioned by their receipt (wall) time: the oldest one Kafka has
    not acknowledged holds the watermark (§6); there is no replay point to fold."""

    def oldest_pending(self) -> float | None:
        return self._first_unacknowledged_epoch()

    def settled(self) -> bool:
        """Everything tracked is acknowledged (nothing pending, nothing failed)."""
        return self.unacknowledged == 0

    def resume_point(self) -> str | None:
        return None

    def replay_anchor(self) -> float | None:
        return None

    def _fold(self, position: Position) -> None:
        return None

    def _pin(self, point: str | None) -> None:
        return None
