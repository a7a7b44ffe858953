"""When to try again: the sliding-window attempt counter and the reconnect policy over it.

Pure (the clock is the ``now`` argument). ``ReconnectPolicy`` composes the three small policies
of the issue: ``Backoff`` (how long), ``RetryWindow`` (how many attempts recently) and
``Breaker`` (whether at all). The attempt counter resets only on the first *event* received
after a reconnect, never on a successful handshake (``docs/protocols.md`` §4):
a server that accepts and then drops every connection must still open the breaker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from connectors.policy.backoff import Backoff
from connectors.policy.breaker import Breaker, BreakerState


class RetryWindow:
    """Attempts within the last ``window_s`` seconds; older ones no longer count."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def record(self, now: float) -> int:
        """Count one attempt at ``now``; return how many the window holds, this one included."""
        self._expire(now)
        self._times.append(now)
        return len(self._times)

    def count(self, now: float) -> int:
        self._expire(now)
        return len(self._times)

    def reset(self) -> None:
        self._times.clear()


@dataclass(frozen=True)
class Plan:
    """Wait ``delay_s``, then attempt; ``opened``: the breaker has just tripped."""

    delay_s: float
    attempts: int
    state: BreakerState
    opened: bool = False


class ReconnectPolicy:
    def __init__(self, backoff: Backoff, window: RetryWindow, breaker: Breaker,
                 max_attempts: int, max_auth_failures: int) -> None:
        self.backoff = backoff
        self.window = window
        self.breaker = breaker
        self.max_attempts = max_attempts
        self.max_auth_failures = max_auth_failures
        self.auth_failures = 0

    def failure(self, now: float, floor_s: float = 0.0, auth: bool = False) -> Plan:
        """A connection attempt or connection ended badly: plan the next attempt.

        ``auth`` marks a rejected or expired token; ``max_auth_failures`` of them in a row open the
        breaker (the infinite-401 loop of the integration guide is the failure this prevents).
        """
        attempts = self.window.record(now)
        if auth:
            self.auth_failures += 1
        too_many = attempts >= self.max_attempts or self.auth_failures >= self.max_auth_failures
        if self.breaker.state is BreakerState.HALF_OPEN or (
            too_many and self.breaker.state is BreakerState.CLOSED
        ):
            self.breaker.trip(now)
            self.window.reset()
            self.auth_failures = 0
            return Plan(max(self.breaker.cooldown_s, floor_s), attempts, self.breaker.state, True)
        return Plan(self.backoff.delay(attempts - 1, floor_s), attempts, self.breaker.state)

    def planned(self) -> Plan:
        """A reconnect the session chose (socket-closing notice): no failure, no wait."""
        return Plan(0.0, 0, self.breaker.state)

    def ready(self, now: float) -> float:
        """Seconds until an attempt is allowed (moves an open breaker to half-open when due)."""
        at = self.breaker.probe_at()
        if at is None:
            return 0.0
        if self.breaker.half_open(now):
            return 0.0
        return at - now

    def event(self) -> bool:
        """An event arrived: reset the counters; True when this closed a half-open breaker."""
        self.window.reset()
        self.backoff.reset()
        self.auth_failures = 0
        return self.breaker.success()
