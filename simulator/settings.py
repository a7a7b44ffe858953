"""The simulator's settings: one frozen object, the one source of the simulator's defaults.

Durations are *platform* seconds (what the contract states, e.g. a Genesys token lives 7200 s);
``SimSettings.scaled`` divides them by ``time_scale`` so that tests and the demo can compress an
hour into seconds. ``None`` means "the platform's own value" (``PLATFORM_RULES``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Platform = Literal["genesys", "nice"]
PLATFORMS: tuple[Platform, ...] = ("genesys", "nice")


@dataclass(frozen=True)
class PlatformRules:
    """What differs between the two flavours (docs/protocols.md, section 2)."""

    path: str
    resume_param: str
    token_lifetime_s: float
    ping_window_s: float
    event_types: tuple[str, ...]


PLATFORM_RULES: dict[Platform, PlatformRules] = {
    "genesys": PlatformRules(
        path="/api/v2/analytics/events", resume_param="since", token_lifetime_s=7200.0,
        ping_window_s=15.0,
        event_types=("interaction.routed", "interaction.completed", "agent.state_changed",
                     "conversation.started", "conversation.transferred", "conversation.ended"),
    ),
    "nice": PlatformRules(
        path="/api/v2/ws/events", resume_param="cursor", token_lifetime_s=3600.0,
        ping_window_s=30.0,
        event_types=("screenpop", "agentState", "contact.started", "contact.queued",
                     "contact.ended", "skill.updated"),
    ),
}


@dataclass(frozen=True)
class ClientSpec:
    """One OAuth client; each client id is a tenant with its own stream per platform."""

    client_id: str
    secret: str = field(repr=False)
    platforms: tuple[Platform, ...] = PLATFORMS
    # events/s per stream of this client; None = SimSettings.rate
    rate: float | None = None


@dataclass(frozen=True)
class SimSettings:
    clients: tuple[ClientSpec, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    # -- events
    rate: float = 20.0
    # None = the platform's realistic types (PLATFORM_RULES)
    types: tuple[str, ...] | None = None
    correlation_ids: int = 200
    retention_events: int = 100_000
    retention_s: float = 24 * 3600.0
    duplicate_rate: float = 0.01
    nice_rewind_max: int = 3
    heartbeat_s: float = 30.0
    generate_tick_s: float = 0.02
    # -- tokens
    token_lifetime_s: float | None = None
    refresh_token_lifetime_s: float = 24 * 3600.0
    issue_refresh_tokens: bool = True
    clock_skew_s: float = 0.0
    # -- limits and keep-alive
    max_connections: int = 10
    limit_answer: Literal["429", "1013"] = "429"
    limit_retry_after_s: float = 5.0
    ping_window_s: float | None = None
    silent_hold_s: float = 60.0
    closing_notice_s: float = 5.0
    oversized_bytes: int = 1_048_576 + 1024
    # -- one connection per stream, like Genesys: on these platforms a new connection of a
    # stream closes the older one with ``replaced_code`` (reason ``replaced``)
    single_session: tuple[Platform, ...] = ()
    replaced_code: int = 4000
    # -- faults: a preset name drawn on a seeded schedule, plus scripted faults
    preset: str | None = None
    preset_interval_s: float = 5.0
    # -- time
    time_scale: float = 1.0
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.retention_events < 1:
            raise ValueError("retention_events must be >= 1")
        if self.correlation_ids < 1:
            raise ValueError("correlation_ids must be >= 1")
        if not 0 <= self.duplicate_rate <= 1:
            raise ValueError("duplicate_rate must be within [0, 1]")

    def scaled(self, platform_seconds: float) -> float:
        """Real seconds for a platform duration, compressed by ``time_scale``."""
        return platform_seconds / self.time_scale

    def now(self) -> float:
        """The server's clock (epoch seconds): the injected clock plus the configured skew."""
        return self.clock() + self.clock_skew_s

    def token_lifetime(self, platform: Platform) -> float:
        lifetime = self.token_lifetime_s
        if lifetime is None:
            lifetime = PLATFORM_RULES[platform].token_lifetime_s
        return self.scaled(lifetime)

    def ping_window(self, platform: Platform) -> float:
        window = self.ping_window_s
        if window is None:
            window = PLATFORM_RULES[platform].ping_window_s
        return self.scaled(window)

    def event_types(self, platform: Platform) -> tuple[str, ...]:
        return self.types if self.types else PLATFORM_RULES[platform].event_types
