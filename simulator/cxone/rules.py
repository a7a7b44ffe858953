"""The client rules of contract s.9, pure: who broke which, counted per access key.

- ``early_request``: a request to the API base or the token endpoint before the server-side
  send time of a 429 plus its ``Retry-After`` (``TOLERANCE_S`` early is on time). One clock per
  access key, as the contract's client keeps one per access key. A request arriving within
  ``TOLERANCE_S`` *after* the 429 was sent is not counted either: another poll of the same key
  may have left the client before the 429 reached it (one poll per endpoint runs at a time, so
  three can race one answer).
- ``expired_token``: a request with a token past its expiry (``tokens.TokenBook``).
- ``concurrent_poll``: a poll started while another poll of the same endpoint and access key is
  in flight (from its request until its answer is sent or its connection closes). The server
  notices a closed connection a little late, so an overlap counts only if the older poll was
  still in flight ``TOLERANCE_S`` after the newer one began; judged when the older one ends
  (or when the counts are read, for one still open).

Two clocks, both passed in: Retry-After times are the server's steady clock (the injectable
wall clock, before skew), in-flight times the event loop's monotonic clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

RULES = ("early_request", "expired_token", "concurrent_poll")
TOLERANCE_S = 0.05


@dataclass
class _Poll:
    key: str
    endpoint: str
    started: float
    later: list[tuple[int, float]] = field(default_factory=list)   # (ticket, started)


class RuleBook:
    def __init__(self) -> None:
        self.violations: dict[str, Counter[str]] = {}
        self._not_before: dict[str, tuple[float, float]] = {}   # key -> (sent, not before)
        self._polls: dict[int, _Poll] = {}
        self._tickets = 0

    def _count(self, key: str, rule: str) -> None:
        self.violations.setdefault(key, Counter())[rule] += 1

    # -- Retry-After -------------------------------------------------------------------------
    def throttled(self, key: str, sent_s: float, retry_after_s: float) -> None:
        """A 429 with ``Retry-After: retry_after_s`` was sent to ``key`` at ``sent_s``."""
        _, until = self._not_before.get(key, (sent_s, 0.0))
        self._not_before[key] = (sent_s, max(until, sent_s + retry_after_s))

    def request(self, key: str, now_s: float) -> bool:
        """A request of ``key`` arrived (API base or token endpoint); True if it was early."""
        sent, until = self._not_before.get(key, (0.0, 0.0))
        early = sent + TOLERANCE_S < now_s < until - TOLERANCE_S
        if early:
            self._count(key, "early_request")
        return early

    def not_before(self, key: str) -> float | None:
        held = self._not_before.get(key)
        return None if held is None else held[1]

    # -- tokens ------------------------------------------------------------------------------
    def expired_token(self, key: str) -> None:
        self._count(key, "expired_token")

    # -- polls in flight ---------------------------------------------------------------------
    def poll_started(self, key: str, endpoint: str, now: float) -> int:
        self._tickets += 1
        for poll in self._polls.values():
            if poll.key == key and poll.endpoint == endpoint:
                poll.later.append((self._tickets, now))
        self._polls[self._tickets] = _Poll(key, endpoint, now)
        return self._tickets

    def poll_ended(self, ticket: int, now: float) -> None:
        poll = self._polls.pop(ticket, None)
        if poll is not None:
            self._judge(poll, now)

    def in_flight(self, key: str, endpoint: str) -> int:
        return sum(1 for p in self._polls.values() if p.key == key and p.endpoint == endpoint)

    def _judge(self, poll: _Poll, now: float) -> None:
        for ticket, began in list(poll.later):
            if now - began > TOLERANCE_S:
                self._count(poll.key, "concurrent_poll")
                for other in (poll, *self._polls.values()):  # a poll is one violation at most
                    other.later = [(t, b) for t, b in other.later if t != ticket]

    def settle(self, now: float) -> None:
        for poll in list(self._polls.values()):
            self._judge(poll, now)

    def counts(self, key: str, now: float | None = None) -> dict[str, int]:
        """Every rule's count for ``key`` (0 when never broken); ``now`` judges open polls."""
        if now is not None:
            self.settle(now)
        found = self.violations.get(key, Counter())
        return {rule: found[rule] for rule in RULES}
