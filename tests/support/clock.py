"""A wall clock that tests move forward: platform time passes at once, without sleeping.

``Clock()`` is epoch seconds (``time.time()``) plus an offset that only grows. Given to a simulator
as its ``clock`` and to a source as ``SourceDeps.wall``, one jump is seen by both at the same
instant, so everything measured in wall time stays consistent between them (coverage, gaps,
``sent_at``, token expiry, a channel's TTL, a notice's minute, a gap's margin and ``settle_s``),
while the event loop's time (backoff, health checks, Retry-After holds, rollover) stays real.
"""

from __future__ import annotations

import time


class Clock:
    """The wall clock plus an offset that tests move forward ("waiting" without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a wall clock shared by a server and a client never steps back")
        self.offset += seconds
