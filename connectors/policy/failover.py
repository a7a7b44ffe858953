"""Regional failover of one stream over its ordered endpoints: an explicit state machine. Pure.

A stream with ``endpoints = [primary, secondary, ...]`` (docs/operations.md, "Regional
failover") streams from one endpoint at a time. The decisions, all here, values in and out (the
clock is the ``now`` argument, the random source a parameter):

* **Fail over** after ``after_attempts`` failed attempts in a row on the current endpoint, or at
  once when the stream's breaker opens: the next attempt goes to the next endpoint of the list
  (after the last one, the primary again). The attempt itself still waits the ordinary backoff
  delay and takes a token of the per-host cap: a fleet failing over is a herd like any other
  (integration guide, edge case 3), and the same jitter, salt and cap spread it.
* **Probe** the primary while streaming from a secondary, about every ``probe_interval_s``
  (jittered x 0.5-1.5, so a fleet's probes are spread too). A probe is one handshake closed at
  once with 1000 without reading an event: at no time do two sockets carry events.
* **Fail back** when a probe answers: the secondary's socket is closed with 1000 and the next
  attempt goes to the primary, with the same resume point. If that attempt fails, the stream goes
  straight back to the secondary it came from (it was streaming a moment ago) instead of
  counting failures on the primary again.
* **Never both at once**: a probe runs only while the stream streams from a secondary; a drop
  during a probe (``failed``) discards the probe's answer, and a probe's answer that arrives when
  the state has moved on is ignored.

::

    PRIMARY ──failover──► SECONDARY ──probe due──► PROBING ──answered──► FAILING_BACK
       ▲                   │  ▲  ▲                   │                      │    │
       │                   │  │  └─probe failed / drop┘                     │    │
       │                   │  └────────────── the failback attempt failed ──┘    │
       └─failover (wraps)──┘                                                     │
       └──────────────────────────── the failback attempt streamed ──────────────┘
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

Random = Callable[[], float]


class FailoverState(enum.Enum):
    PRIMARY = "primary"            # on endpoint 0
    SECONDARY = "secondary"        # on endpoint k > 0; the primary is probed when due
    PROBING = "probing"            # a probe of the primary is in flight
    FAILING_BACK = "failing_back"  # the next attempt goes to the primary


_F = FailoverState
TRANSITIONS: dict[FailoverState, frozenset[FailoverState]] = {
    _F.PRIMARY: frozenset({_F.SECONDARY}),
    # a failover from the last secondary wraps round to the primary
    _F.SECONDARY: frozenset({_F.SECONDARY, _F.PRIMARY, _F.PROBING}),
    _F.PROBING: frozenset({_F.SECONDARY, _F.FAILING_BACK}),
    _F.FAILING_BACK: frozenset({_F.PRIMARY, _F.SECONDARY}),
}


class FailoverTransitionError(ValueError):
    def __init__(self, current: FailoverState, new: FailoverState) -> None:
        super().__init__(f"failover cannot go from {current.value} to {new.value}")
        self.current = current
        self.new = new


@dataclass(frozen=True)
class Switch:
    """The stream moves from endpoint ``source`` to endpoint ``target``, and why: ``failures``
    (a run of failed attempts), ``breaker`` (the breaker opened), ``failback`` (the primary
    answered a probe), ``failback_failed`` (the attempt on the primary failed)."""

    source: int
    target: int
    reason: str


class Failover:
    """Which endpoint the next attempt uses, and when to probe and fail back."""

    def __init__(self, endpoints: int, after_attempts: int, probe_interval_s: float,
                 rand: Random) -> None:
        if endpoints < 1 or after_attempts < 1 or probe_interval_s <= 0:
            raise ValueError("failover needs >= 1 endpoint, after_attempts >= 1, interval > 0")
        self.endpoints = endpoints
        self.after_attempts = after_attempts
        self.probe_interval_s = probe_interval_s
        self._rand = rand
        self.state = FailoverState.PRIMARY
        self.current = 0
        self.failures = 0                 # failed attempts in a row on ``current``
        self.probe_at: float | None = None
        self._back_to: int | None = None  # the secondary a failback came from

    @property
    def enabled(self) -> bool:
        return self.endpoints > 1

    def _go(self, new: FailoverState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise FailoverTransitionError(self.state, new)
        self.state = new

    # -- what the session reports --------------------------------------------------------------
    def failed(self, breaker_opened: bool = False) -> Switch | None:
        """An attempt (or the connection) on ``current`` ended badly; a ``Switch`` when the next
        attempt goes elsewhere."""
        if not self.enabled:
            return None
        if self.state is FailoverState.FAILING_BACK:
            assert self._back_to is not None
            return self._move(self._back_to, "failback_failed")
        if self.state is FailoverState.PROBING:
            self._go(FailoverState.SECONDARY)  # the probe's answer no longer counts
        self.failures += 1
        if breaker_opened or self.failures >= self.after_attempts:
            return self._move((self.current + 1) % self.endpoints,
                              "breaker" if breaker_opened else "failures")
        return None

    def streaming(self, now: float) -> None:
        """The first event arrived on ``current``: the run of failures ends; on a secondary, the
        first probe of the primary is scheduled."""
        self.failures = 0
        if self.state is FailoverState.FAILING_BACK:
            self._go(FailoverState.PRIMARY)
            self._back_to = None
        if self.state is FailoverState.SECONDARY and self.probe_at is None:
            self.probe_at = self._next_probe(now)

    def probe_due(self, now: float) -> bool:
        """Whether to probe the primary now (only while streaming from a secondary)."""
        return (self.state is FailoverState.SECONDARY and self.failures == 0
                and self.probe_at is not None and now >= self.probe_at)

    def probe_started(self) -> None:
        self._go(FailoverState.PROBING)

    def probe_answered(self, ok: bool, now: float) -> Switch | None:
        """The probe's outcome; a ``Switch`` to the primary when it answered. Ignored when the
        state moved on meanwhile (the secondary dropped during the probe)."""
        if self.state is not FailoverState.PROBING:
            return None
        if not ok:
            self._go(FailoverState.SECONDARY)
            self.probe_at = self._next_probe(now)
            return None
        self._back_to = self.current
        self._go(FailoverState.FAILING_BACK)
        switch = Switch(self.current, 0, "failback")
        self.current = 0
        self.failures = 0
        self.probe_at = None
        return switch

    # -- helpers -------------------------------------------------------------------------------
    def _move(self, target: int, reason: str) -> Switch:
        switch = Switch(self.current, target, reason)
        self._go(FailoverState.PRIMARY if target == 0 else FailoverState.SECONDARY)
        self.current = target
        self.failures = 0
        self.probe_at = None  # scheduled once the new endpoint streams
        if reason == "failback_failed":
            self._back_to = None
        return switch

    def _next_probe(self, now: float) -> float:
        # the guide's jitter, x 0.5-1.5, from the stream's salted random source
        return now + self.probe_interval_s * (0.5 + self._rand())
