"""When a resume point has fallen out of the platform's retention: two pure rules.

``docs/protocols.md`` §2: "A resume point older than the server's retention
replays from the oldest retained event: events between are gone for good, and the client must
report the gap (log line and metric), not hide it." Retention is rarely published and can shrink
at any time (a platform may evict by count, as the simulator's ``purge`` fault does), so age alone
cannot see every gap. The session applies both rules and reports a gap (``stream.gap``,
``ccstream_gaps``) once per resume point:

* **age** (before connecting): the resume point is older than ``retention_s``. Genesys ``since``
  carries its own time; a NICE cursor is opaque, so its age is how long ago the connector first
  saw it as the resume point (the cursor record's ``updated_at`` across restarts).
* **replay** (on the first event of the new connection): the platform must send again every
  retained event from the resume point, so the *anchor* -- the timestamp of the earliest event
  already received that lies after the resume point (``Progress.replay_anchor``) -- must come back
  first. If the first replayed event is later than the anchor, the anchor was evicted: a gap.
  Genesys: ``since=T`` is inclusive, so the anchor is the earliest known event with timestamp
  ``>= T`` (an event not acknowledged yet, or the newest acknowledged one). NICE: the anchor is
  the cursor's successor when it was received but not acknowledged; when everything received was
  acknowledged the successor is unknown and a later first event cannot be told from a quiet
  platform, so only the age rule applies.

Tolerance: across correlation ids timestamps are not ordered, and the connector already assumes
a disorder of at most ``since_lateness_s`` (``progress.py``); a first event later than the anchor
by no more than that is not a gap. A replayed event at or before the anchor (NICE re-sends some
events at or before C; Genesys replays the event at ``since`` again) proves nothing was lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def age_gap(basis_epoch: float, now: float, retention_s: float) -> bool:
    """The age rule: a resume point first seen (or stamped) at ``basis_epoch`` is older than the
    platform's retention at wall time ``now``."""
    return now - basis_epoch > retention_s


def replay_gap(anchor: float | None, first_epoch: float | None, tolerance_s: float) -> bool:
    """The replay rule: the first event after a resume is later than the anchor (+ tolerance)."""
    if anchor is None or first_epoch is None:
        return False
    return first_epoch > anchor + tolerance_s


@dataclass(frozen=True)
class Gap:
    rule: str                     # "age" | "replay"
    resume: str
    age_s: float | None = None    # age rule: how old the resume point is
    anchor: float | None = None   # replay rule: the event that should have come back first
    first: float | None = None    # replay rule: the event that came first instead


class GapWatch:
    """Both rules for one stream, reporting each resume point at most once. Pure."""

    def __init__(self, resume: str | None, seen_epoch: float, retention_s: float,
                 tolerance_s: float, since: Callable[[str], float | None] | None) -> None:
        self.retention_s = retention_s
        self.tolerance_s = tolerance_s
        self._since = since               # Genesys: the resume point's own time
        self._seen: tuple[str | None, float] = (resume, seen_epoch)
        self._reported: str | None = None
        self._resume: str | None = None
        self._anchor: float | None = None

    def note_resume(self, point: str | None, now: float) -> None:
        """``point`` was seen as the resume point at wall time ``now`` (NICE cursor ages)."""
        if point != self._seen[0]:
            self._seen = (point, now)

    def connecting(self, resume: str | None, anchor: float | None, now: float) -> Gap | None:
        """Before an attempt from ``resume``: the age rule; remembers the replay anchor.

        An attempt that got no event (a refused handshake, a drop) leaves the resume point as
        it was but has forgotten what it had received (``Progress.rewind``): the anchor of the
        earlier attempt still holds for the same resume point.
        """
        if anchor is None and resume == self._resume:
            anchor = self._anchor
        self._resume, self._anchor = resume, anchor
        if resume is None or resume == self._reported:
            return None
        self.note_resume(resume, now)
        own = self._since(resume) if self._since is not None else None
        basis = own if own is not None else self._seen[1]
        if not age_gap(basis, now, self.retention_s):
            return None
        self._reported = resume
        return Gap("age", resume, age_s=now - basis)

    def first_event(self, epoch: float | None) -> Gap | None:
        """The first event of the connection: the replay rule (once per connection)."""
        anchor, self._anchor = self._anchor, None
        resume = self._resume
        if resume is None or resume == self._reported:
            return None
        if not replay_gap(anchor, epoch, self.tolerance_s):
            return None
        self._reported = resume
        return Gap("replay", resume, anchor=anchor, first=epoch)
