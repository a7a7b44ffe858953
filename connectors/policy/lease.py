"""Cluster mode: the membership lease, the instance's right to act on its slots. Pure.

Kafka tells a member that it was evicted only when its next heartbeat is answered, which a
paused or partitioned process never gets to see; the others may have taken its slots long
before. So the instance acts (connects, sends, commits, fences) only while it holds a lease:
each time the group coordinator lists it as a member (``DescribeGroups``, every heartbeat
interval) the lease runs ``duration_s`` from the moment the request was *sent*. The lease is
shorter than ``session_timeout - heartbeat_interval``: it runs out before the coordinator can
evict the member and hand its slots on, so a process that wakes from SIGSTOP finds it expired at
the first frame, send, connect or commit, before doing any of them (Kafka Connect's "revoke when
the coordinator is unreachable", on public APIs).

States: ``NONE`` (never confirmed) -> ``HELD`` <-> ``EXPIRED``. ``observe(now)`` and
``renew(sent_at, now)`` return the transition that happened, if any, so that the driver logs and
acts once per change.
"""

from __future__ import annotations

import enum


class LeaseState(enum.Enum):
    NONE = "none"
    HELD = "held"
    EXPIRED = "expired"


TRANSITIONS: dict[LeaseState, frozenset[LeaseState]] = {
    LeaseState.NONE: frozenset({LeaseState.HELD}),
    LeaseState.HELD: frozenset({LeaseState.EXPIRED}),
    LeaseState.EXPIRED: frozenset({LeaseState.HELD}),
}


class Lease:
    def __init__(self, duration_s: float) -> None:
        if duration_s <= 0:
            raise ValueError(f"a lease needs a positive duration ({duration_s})")
        self.duration_s = duration_s
        self.until: float | None = None
        self.state = LeaseState.NONE
        self.expiries = 0
        self._lost_at: float | None = None

    def valid(self, now: float) -> bool:
        """One comparison: checked before every connect, send and commit."""
        return self.until is not None and now < self.until

    def renew(self, sent_at: float, now: float) -> LeaseState | None:
        """The coordinator listed us in an answer to a request sent at ``sent_at``."""
        if self._lost_at is not None and sent_at <= self._lost_at:
            return self.observe(now)  # an answer older than what we know since: stale
        until = sent_at + self.duration_s
        if self.until is None or until > self.until:
            self.until = until
        return self.observe(now)

    def lose(self, now: float) -> LeaseState | None:
        """We know we are no longer a member (we left, or the group said so): expire now."""
        self._lost_at = now
        self.until = None
        return self._move(LeaseState.EXPIRED) if self.state is LeaseState.HELD else None

    def observe(self, now: float) -> LeaseState | None:
        """The state change that ``now`` brings, if any."""
        if self.valid(now):
            return self._move(LeaseState.HELD)
        if self.state is LeaseState.HELD:
            return self._move(LeaseState.EXPIRED)
        return None

    def remaining(self, now: float) -> float:
        return 0.0 if self.until is None else max(0.0, self.until - now)

    def _move(self, new: LeaseState) -> LeaseState | None:
        if new is self.state:
            return None
        if new not in TRANSITIONS[self.state]:
            raise ValueError(f"lease cannot go from {self.state.value} to {new.value}")
        if new is LeaseState.EXPIRED:
            self.expiries += 1
        self.state = new
        return new
