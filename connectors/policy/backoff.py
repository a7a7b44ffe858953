"""Backoff between connection attempts: exponential, capped, jittered, salted per instance.

Pure: the random source is a parameter (``connectors.salt.salted_random``), nothing here sleeps or
reads a clock.

The default jitter is the platform guide's formula (``docs/protocols.md`` §4)::

    delay = min(base * 2**attempt, max) * (0.5 + random())

``full`` (``uniform(0, min(base * 2**attempt, max))``) and ``decorrelated``
(``min(max, uniform(base, previous * 3))``, AWS architecture blog) are offered too; ``none`` is
plain capped exponential, for tests and for operators who want determinism. Every delay gets the
deployment-level offset added (integration guide, "Thundering herd": stagger deployments), and a
floor (``Retry-After``, 1013's ``retry_after``) is applied last: a floor is never undercut.
"""

from __future__ import annotations

from collections.abc import Callable

from ccstream.config import JitterKind

Random = Callable[[], float]


class Backoff:
    """Delays for attempts 0, 1, 2, ...; ``delay()`` keeps the decorrelated state."""

    def __init__(self, base_s: float, max_s: float, jitter: JitterKind, rand: Random,
                 offset_s: float = 0.0) -> None:
        if base_s <= 0 or max_s < base_s:
            raise ValueError(f"backoff needs 0 < base ({base_s}) <= max ({max_s})")
        self.base_s = base_s
        self.max_s = max_s
        self.jitter = jitter
        self.offset_s = offset_s
        self._rand = rand
        self._previous = base_s

    def delay(self, attempt: int, floor_s: float = 0.0) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based), never below ``floor_s``."""
        capped = min(self.base_s * 2.0 ** min(attempt, 62), self.max_s)
        if self.jitter == "default":
            raw = capped * (0.5 + self._rand())
        elif self.jitter == "full":
            raw = capped * self._rand()
        elif self.jitter == "decorrelated":
            upper = max(self.base_s, self._previous * 3.0)
            raw = min(self.max_s, self.base_s + (upper - self.base_s) * self._rand())
            self._previous = raw
        else:
            raw = capped
        return max(raw + self.offset_s, floor_s)

    def reset(self) -> None:
        """Forget the decorrelated state (called when the attempt counter resets)."""
        self._previous = self.base_s
