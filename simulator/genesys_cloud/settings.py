"""The Genesys Cloud simulator's settings: one frozen object, the one source of its defaults.

Two kinds of durations (``genesys-cloud.md`` s.10 "Always on"):

- *platform* seconds, what the platform itself does (token lifetime, channel TTL, heartbeat,
  closing notice, the 60 s rate window): ``GcSettings.scaled`` divides them by ``time_scale``;
- *simulator* seconds, real and never scaled: the replace grace (the judge sets 10), the
  analytics data lag (bounded by the client's ``settle_s``, which is real), fault times.

Pure: no clock and no random source of its own; ``clock`` is injected (``None`` = wall clock,
supplied by the server), randomness comes from ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GcClient:
    """One OAuth client (client credentials) and its organisation: queues, users, activity."""

    client_id: str
    secret: str = field(repr=False)
    queues: int = 4
    users: int = 6
    # generator steps/s for this org; None = GcSettings.rate
    rate: float | None = None

    def __post_init__(self) -> None:
        if not self.client_id or ":" in self.client_id:
            raise ValueError(f"client id must be non-empty without ':', not {self.client_id!r}")
        if self.queues < 0 or self.users < 0:
            raise ValueError("queues and users must be >= 0")


@dataclass(frozen=True)
class GcSettings:
    clients: tuple[GcClient, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    # -- activity: generator steps per second per org (a step publishes 1-2 notifications)
    rate: float = 20.0
    # live conversations per org at once; None = 2 per queue (at least 2)
    max_conversations: int | None = None
    # -- platform durations (seconds of the platform, divided by time_scale)
    token_lifetime_s: float = 86_400.0    # s.2: default 24 h (300 s - 48 h)
    channel_ttl_s: float = 86_400.0       # s.3: 24 h without a subscription call
    heartbeat_s: float = 30.0             # s.5
    notice_s: float = 60.0                # s.5: closing notice -> 1001 "about 1 minute" later
    rate_window_s: float = 60.0           # s.3: 300 calls per token in a sliding 60 s
    idle_close_s: float | None = None     # close 1001 a socket on a channel holding no topic
    # -- limits (s.3, s.4)
    rate_limit: int = 300
    max_channels: int = 20
    max_topics: int = 1000
    max_topic_chars: int = 199            # each id < 200 characters
    # -- simulator durations (real seconds, never scaled)
    replace_grace_s: float = 1.0          # s.5: old socket gets 4000 this long after a new one
    grace_duplicates: bool = True         # during the grace both sockets get notifications
    analytics_lag_s: float = 5.0          # s.7: L <= settle_s / 2
    silent_hold_s: float = 60.0           # a silent socket's TCP is dropped after this
    tick_s: float = 0.02                  # the driver's clock tick
    # -- faults: a preset drawn on a seeded schedule (mean spacing preset_interval_s)
    preset: str | None = None
    preset_interval_s: float = 5.0
    # -- time
    time_scale: float = 1.0
    clock: Callable[[], float] | None = None   # epoch seconds; None = the wall clock

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.max_channels < 1:
            raise ValueError("max_channels must be >= 1")
        if self.rate_limit < 1 or self.max_topics < 1:
            raise ValueError("rate_limit and max_topics must be >= 1")
        if self.replace_grace_s < 0 or self.analytics_lag_s < 0:
            raise ValueError("replace_grace_s and analytics_lag_s must be >= 0")
        ids = [c.client_id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("client ids must be distinct")

    def scaled(self, platform_seconds: float) -> float:
        """Real seconds for a platform duration, compressed by ``time_scale``."""
        return platform_seconds / self.time_scale

    def client_rate(self, client: GcClient) -> float:
        return self.rate if client.rate is None else client.rate
