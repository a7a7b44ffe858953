"""The circuit breaker of one stream: an explicit state machine.

``docs/protocols.md`` §4: "a circuit breaker after a maximum number of
attempts". Closed: attempts flow. Open: no attempt until the cool-down has passed, and the
operator is told (log ``breaker.opened``, metric, exit code when every stream is open).
Half-open: exactly one probe attempt; an *event* received closes the breaker (a handshake alone
proves nothing, integration guide §2), a failed probe opens it again.
"""

from __future__ import annotations

import enum


class BreakerState(enum.Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


# every allowed transition; anything else is a defect (walked by tests/test_conn_policies.py)
TRANSITIONS: dict[BreakerState, frozenset[BreakerState]] = {
    BreakerState.CLOSED: frozenset({BreakerState.OPEN}),
    BreakerState.OPEN: frozenset({BreakerState.HALF_OPEN}),
    BreakerState.HALF_OPEN: frozenset({BreakerState.OPEN, BreakerState.CLOSED}),
}


class BreakerTransitionError(RuntimeError):
    """A transition the table does not allow."""

    retriable = False

    def __init__(self, current: BreakerState, target: BreakerState) -> None:
        super().__init__(f"breaker cannot go from {current.name} to {target.name}")
        self.current = current
        self.target = target


class Breaker:
    def __init__(self, cooldown_s: float) -> None:
        self.cooldown_s = cooldown_s
        self.state = BreakerState.CLOSED
        self.opened_at: float | None = None

    def _go(self, target: BreakerState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise BreakerTransitionError(self.state, target)
        self.state = target

    def trip(self, now: float) -> None:
        """Open (from closed, or from half-open when the probe failed)."""
        self._go(BreakerState.OPEN)
        self.opened_at = now

    def probe_at(self) -> float | None:
        """When the half-open probe may run (None unless open)."""
        if self.state is not BreakerState.OPEN or self.opened_at is None:
            return None
        return self.opened_at + self.cooldown_s

    def half_open(self, now: float) -> bool:
        """Move to half-open if the cool-down has passed; True when it did."""
        at = self.probe_at()
        if at is None or now < at:
            return False
        self._go(BreakerState.HALF_OPEN)
        return True

    def success(self) -> bool:
        """An event arrived: close from half-open (True when the state changed)."""
        if self.state is BreakerState.HALF_OPEN:
            self._go(BreakerState.CLOSED)
            self.opened_at = None
            return True
        return False
