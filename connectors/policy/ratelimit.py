"""A per-host token bucket capping reconnects per second across every stream of the process.

Integration guide, "Thundering herd": "a rate limiter on the reconnect handler that caps
reconnection attempts per second per host". Pure: ``reserve(now)`` takes a token (possibly one
that only becomes available in the future) and says how long the caller must wait for it; the
driver sleeps. Reserving ahead keeps callers in FIFO order without a lock.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 ({rate}) and burst >= 1 ({burst})")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def reserve(self, now: float) -> float:
        """Take one token; return the seconds to wait before using it (0 when one was saved)."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    def available(self, now: float) -> float:
        """Tokens available now (negative while reservations are outstanding)."""
        self._refill(now)
        return self._tokens
