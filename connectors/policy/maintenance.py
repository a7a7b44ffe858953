"""Maintenance windows: whether one is open now, and how a dropped stream waits inside it. Pure.

docs/operations.md, "Maintenance windows"; integration guide, edge case 3: "scheduling reconnect
cooldowns during known maintenance periods". A window is one-off (``start``/``end``) or weekly
(``day``, ``from``, ``to``), all in UTC; ``now`` is epoch seconds (the wall clock: windows are
calendar times), passed in.

Inside a window a stream that drops does not back off towards its breaker: the platform said it
would be away, so failures there say nothing about the stream's health. It waits instead, and
makes one probe (one ordinary connection attempt, still under the per-host cap) about every
``probe_interval_s``, jittered x 0.5-1.5 so that a fleet's probes are spread. A wait never
outlasts the window by much: it ends at the window's end plus a jittered share of the interval,
so the fleet does not come back in one wave either. A stream that is connected when a window
opens is left alone; outside every window nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ccstream.config import WEEKDAYS, MaintenanceWindow, minutes

Random = Callable[[], float]
DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
# 1970-01-01 was a Thursday: epoch day 0 is weekday index 3 (mon = 0)
_EPOCH_WEEKDAY = 3


@dataclass(frozen=True)
class Open:
    """The window open at some instant: when it ends, and its probe interval."""

    end: float
    probe_interval_s: float


def _weekly_span(window: MaintenanceWindow, now: float) -> tuple[float, float] | None:
    """This week's occurrence of a weekly window that contains ``now``, if any."""
    assert window.day is not None and window.from_ is not None and window.to is not None
    day = int(now // DAY_S)
    weekday = (day + _EPOCH_WEEKDAY) % 7
    if weekday != WEEKDAYS.index(window.day):
        return None
    midnight = day * DAY_S
    start = midnight + minutes(window.from_) * 60.0
    end = midnight + minutes(window.to) * 60.0
    return (start, end) if start <= now < end else None


def span(window: MaintenanceWindow, now: float) -> tuple[float, float] | None:
    """``(start, end)`` of ``window``'s occurrence that contains ``now``, or None."""
    if window.day is not None:
        return _weekly_span(window, now)
    start, end = window.epochs()
    return (start, end) if start <= now < end else None


class Calendar:
    """The windows that cover one stream."""

    def __init__(self, windows: Sequence[MaintenanceWindow]) -> None:
        self.windows = tuple(windows)

    def open_at(self, now: float) -> Open | None:
        """The open window at ``now`` (of several, the one that ends last), or None."""
        found: Open | None = None
        for window in self.windows:
            occurrence = span(window, now)
            if occurrence is not None and (found is None or occurrence[1] > found.end):
                found = Open(occurrence[1], window.probe_interval_s)
        return found


def probe_delay(window: Open, now: float, rand: Random) -> float:
    """Seconds until the next probe of a dropped stream inside ``window``.

    ``interval x (0.5 + r)`` (the guide's jitter, from the stream's salted random source), but no
    later than the window's end plus ``r x interval / 2``: after the window the fleet returns
    spread over half an interval, not at the stroke of the end.
    """
    r = rand()
    jittered = window.probe_interval_s * (0.5 + r)
    after_end = window.end - now + r * window.probe_interval_s / 2
    return max(0.0, min(jittered, after_end))
