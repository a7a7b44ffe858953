"""What a CXone stream may commit, pure: acknowledged cursors and the open-gap/backfill ledger.

docs/cxone.md §7: "an endpoint's value advances only when every row of its answer, and of every
earlier answer, has been acknowledged". ``PollProgress`` is ``Delivery``'s ``Progress``: every
record (DLQ records too) is tracked in arrival order, and after an answer's rows the source
places a *mark* (``CursorMark``: this endpoint's ``lastPollTime``). A mark takes effect once every
record tracked before it is acknowledged, so the committed cursor of an endpoint is always the
``lastPollTime`` of an answer whose rows, and all rows before them, are in Kafka. Marks are in
arrival order across the endpoints, stricter than per endpoint, and just as cheap.

§6: a gap leaves ``open_gaps`` only once Kafka has acknowledged all its records: the backfill
places a ``GapMark`` after its last page's rows, and ``GapLedger.finish`` removes the gap when
that mark takes effect. A backfill cut short (shutdown, Kafka failure) is abandoned and redone
in full later; the gap stays in ``open_gaps`` meanwhile, so a restart redoes it too.

A failed send blocks the marks behind it until ``rewind()``: the source then polls again from the
committed cursors and restarts the running backfill (the server serves it all again:
``updatedSince`` is inclusive, completed contacts are listed again).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connectors.policy.intervals import Interval, merge
from connectors.policy.progress import Position, Progress

PAGE_SIZE = 100      # §6: top=100, skip=0, 100, 200, ... until a page holds fewer


@dataclass(frozen=True)
class CursorMark:
    endpoint: str
    value: str          # lastPollTime, verbatim


@dataclass(frozen=True)
class GapMark:
    run: int            # BackfillRun.number


Mark = CursorMark | GapMark


class PollProgress(Progress):
    """Records in arrival order, with marks between them (see the module docstring)."""

    def __init__(self, cursors: dict[str, str] | None = None,
                 on_gap_done: Callable[[int], None] = lambda _: None) -> None:
        super().__init__()
        self.cursors: dict[str, str] = dict(cursors or {})   # committed: safe to resume from
        self._marks: deque[tuple[int, Mark]] = deque()
        self._on_gap_done = on_gap_done

    def mark(self, mark: Mark) -> None:
        """``mark`` takes effect once every record tracked so far is acknowledged."""
        self._marks.append((self._next, mark))
        self._apply()

    def ack(self, seq: int) -> None:
        super().ack(seq)
        self._apply()

    def _apply(self) -> None:
        head = next(iter(self._entries), self._next)  # the first record not acknowledged
        while self._marks and self._marks[0][0] <= head:
            _, mark = self._marks.popleft()
            if isinstance(mark, CursorMark):
                self.cursors[mark.endpoint] = mark.value
            else:
                self._on_gap_done(mark.run)

    @property
    def pending_marks(self) -> int:
        return len(self._marks)

    # -- Progress's hooks: positions play no part here, marks do ----------------------------
    def resume_point(self) -> str | None:
        return None

    def replay_anchor(self) -> float | None:
        return None

    def _fold(self, position: Position) -> None:
        pass

    def _pin(self, point: str | None) -> None:
        self._marks.clear()  # what they stood for is forgotten with the records before them


def subtract(intervals: Iterable[Interval], gone: Interval) -> list[Interval]:
    """``intervals`` without ``gone`` (closed intervals: the pieces left keep their ends)."""
    out: list[Interval] = []
    for start, end in intervals:
        if end < gone[0] or start > gone[1]:
            out.append((start, end))
            continue
        if start < gone[0]:
            out.append((start, gone[0]))
        if end > gone[1]:
            out.append((gone[1], end))
    return merge(out)


@dataclass
class BackfillRun:
    """One gap being read from ``contacts/completed`` (§6)."""

    number: int
    gap: Interval
    started: float                 # monotonic
    skip: int = 0
    pages: int = 0
    records: int = 0
    read: bool = False             # every page read; waiting for Kafka's acknowledgements
    seen: set[str] = field(default_factory=set)   # dedup keys of this run (pages shift, §6)

    def page(self, rows: int) -> bool:
        """A page of ``rows`` rows was handed on; True when it was the last (a short page)."""
        self.pages += 1
        self.skip += PAGE_SIZE
        self.read = rows < PAGE_SIZE
        return self.read


class GapLedger:
    """A stream's open gaps and its one backfill at a time (§5, §6). ``keep`` is False when gaps
    are only reported (``backfill = false`` or no ``contacts/active``): then nothing is open."""

    def __init__(self, open_gaps: Iterable[Interval], *, keep: bool, settle_s: float) -> None:
        self.keep = keep
        self.settle_s = settle_s
        self.open: list[Interval] = merge(open_gaps) if keep else []
        self.running: BackfillRun | None = None
        self._runs = 0

    def add(self, gap: Interval) -> None:
        if self.keep:
            self.open = merge([*self.open, gap])

    def wait(self, server_now: float) -> float | None:
        """Seconds until the oldest open gap may be backfilled (0: now; None: nothing to do or a
        run is on). §6: once now >= to + settle_s, oldest first, one at a time."""
        if self.running is not None or not self.open:
            return None
        return max(0.0, self.open[0][1] + self.settle_s - server_now)

    def start(self, now: float) -> BackfillRun:
        if self.running is not None or not self.open:
            raise RuntimeError("no gap to backfill, or one is already running")
        self._runs += 1
        self.running = BackfillRun(self._runs, self.open[0], now)
        return self.running

    def finish(self, number: int) -> BackfillRun | None:
        """The run's records are all acknowledged: its gap leaves ``open``. The finished run, or
        None when ``number`` is not the running one (abandoned since)."""
        run = self.running
        if run is None or run.number != number:
            return None
        self.open = subtract(self.open, run.gap)
        self.running = None
        return run

    def abandon(self) -> None:
        """Cut short: the gap stays open and is redone in full."""
        self.running = None
