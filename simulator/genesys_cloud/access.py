"""Who may call, how often, and which client rules were broken; pure (``now`` is a parameter).

- ``TokenBook``: opaque access tokens (s.2: JWT or not is unconfirmed, so clients must not read
  them): token -> client, issue time, expiry = issue + ``expires_in`` as sent.
- ``SlidingWindow``: at most ``limit`` admitted calls per key in any ``window_s`` (s.3: 300 per
  token per 60 s; the window is *modelled* as sliding, calls answered 429 do not count).
- ``RetryBook``: every Retry-After given out, per OAuth client and surface (``rest``, ``token``).
- ``RuleBook``: the s.11 rule counters per OAuth client; all must stay 0 for a correct client.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass

from simulator.genesys_cloud.model import Rng

# s.11: "50 ms tolerance" for requests made right at the promised time
TOLERANCE_S = 0.05

RULES = (
    "rest_before_retry_after",   # a REST request before a 429's send time + Retry-After
    "token_before_retry_after",  # a token request before a token 429's send time + Retry-After
    "expired_token",             # a REST request with a token past issue + expires_in
    "too_many_channels",         # POST /channels while the 20 live channels all have a socket
    "over_1000_ids",             # a subscription call that would put > 1000 ids on a channel
    "socket_overlap",            # two sockets on one channel > 5 s after a notice, > 1 s else
)


@dataclass(frozen=True)
class TokenInfo:
    client_id: str
    issued: float
    expires: float

    def expired(self, now: float) -> bool:
        return now >= self.expires


class TokenBook:
    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._tokens: dict[str, TokenInfo] = {}
        self.issued: Counter[str] = Counter()

    def issue(self, client_id: str, now: float, expires_in: float) -> str:
        token = f"{self._rng.getrandbits(192):048x}"
        self._tokens[token] = TokenInfo(client_id, now, now + expires_in)
        self.issued[client_id] += 1
        return token

    def lookup(self, token: str | None) -> TokenInfo | None:
        """The token's facts, or None if it is not one of ours (expired ones are kept)."""
        return self._tokens.get(token or "")


class SlidingWindow:
    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._calls: dict[str, deque[float]] = {}

    def admit(self, key: str, now: float) -> float | None:
        """None if the call is admitted (and counted); else the seconds until a slot frees."""
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - self.window_s:
            calls.popleft()
        if len(calls) >= self.limit:
            return max(0.0, calls[0] + self.window_s - now)
        calls.append(now)
        return None

    def used(self, key: str, now: float) -> int:
        calls = self._calls.get(key, deque())
        return sum(1 for t in calls if t > now - self.window_s)


def retry_after_header(seconds: float) -> int:
    """``Retry-After: <integer s>`` (s.3): rounded up, at least 1."""
    return max(1, math.ceil(seconds - 1e-9))


class RetryBook:
    def __init__(self) -> None:
        self._not_before: dict[tuple[str, str], float] = {}

    def promise(self, client_id: str, surface: str, now: float, whole_seconds: int) -> None:
        """A 429 with ``Retry-After: whole_seconds`` was sent to this client at ``now``."""
        key = (client_id, surface)
        self._not_before[key] = max(self._not_before.get(key, 0.0), now + whole_seconds)

    def early(self, client_id: str, surface: str, now: float) -> bool:
        """Whether a request now comes before a promised time (less the tolerance)."""
        not_before = self._not_before.get((client_id, surface))
        return not_before is not None and now < not_before - TOLERANCE_S

    def not_before(self, client_id: str, surface: str) -> float | None:
        return self._not_before.get((client_id, surface))


class RuleBook:
    def __init__(self) -> None:
        self._counts: dict[str, Counter[str]] = {}

    def count(self, client_id: str, rule: str) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown rule {rule!r}")
        self._counts.setdefault(client_id, Counter())[rule] += 1

    def of(self, client_id: str) -> dict[str, int]:
        counts = self._counts.get(client_id, Counter())
        return {rule: counts[rule] for rule in RULES}

    def broken(self, client_id: str) -> int:
        return sum(self.of(client_id).values())
