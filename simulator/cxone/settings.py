"""The CXone simulator's settings: one frozen object, the one source of its defaults (pure).

Durations marked *platform* are what NICE CXone does (a token lives 3600 s, Real-Time Data keeps
24 h); ``CxSettings.scaled`` divides them by ``time_scale``. Durations marked *real* (fault
times, stalls, generation ticks) are never scaled. ``clock`` is the server's wall clock in epoch
seconds; None means the system clock (the driver supplies it: this module imports no clock).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CxTenant:
    """One tenant (``name`` is its ``tenantId``) with one API user's access key and one app."""

    name: str
    access_key_id: str
    access_key_secret: str = field(repr=False)
    client_id: str
    client_secret: str = field(repr=False)
    agents: int = 8
    skills: int = 3
    # row changes/s of this tenant; None = CxSettings.rate
    rate: float | None = None

    def __post_init__(self) -> None:
        if not (self.name and self.access_key_id and self.client_id):
            raise ValueError("a tenant needs a name, an access key id and a client id")
        if self.agents < 1 or self.skills < 1:
            raise ValueError("a tenant needs at least one agent and one skill")
        if self.rate is not None and self.rate < 0:
            raise ValueError("rate must be >= 0")


@dataclass(frozen=True)
class CxSettings:
    tenants: tuple[CxTenant, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 0
    # -- data: row changes/s per tenant (0: only CxoneSimulator.step)
    rate: float = 5.0
    generate_tick_s: float = 0.05                   # real
    # -- discovery (contract s.2): what cxone-configuration answers
    area: str = "na1"
    domain: str = "niceincontact.com"
    api_version: str = "v32.0"                      # the version the snippet prints; any vN.N works
    # -- platform durations (scaled by time_scale)
    token_lifetime_s: float = 3600.0                # expires_in and exp - iat
    retention_s: float = 24 * 3600.0                # updatedSince older than this: truncated
    completion_lag_s: float = 20.0                  # max delay until completed lists a contact
    # -- server clock: offset of the clock on the wire (lastPollTime, Date, iat/exp, times)
    clock_skew_s: float = 0.0
    # -- completed contacts: the largest page the server gives, whatever ``top`` asks
    max_top: int = 1000
    # -- faults: a preset drawn on a seeded schedule; default stall (real s, > open_timeout 10 s)
    preset: str | None = None
    preset_interval_s: float = 10.0                 # real, mean spacing of preset faults
    stall_s: float = 15.0                           # real
    retry_after_s: float = 2.0                      # real, a 429 fault without retry_after
    # -- ledger: default shortest outage listed by /_sim/ledger (?min_outage_s= overrides)
    outage_min_s: float = 1.0
    # -- time
    time_scale: float = 1.0
    clock: Callable[[], float] | None = None

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.rate < 0:
            raise ValueError("rate must be >= 0")
        if self.token_lifetime_s <= 0 or self.retention_s <= 0:
            raise ValueError("token_lifetime_s and retention_s must be > 0")
        if self.completion_lag_s < 0:
            raise ValueError("completion_lag_s must be >= 0")
        if self.max_top < 1:
            raise ValueError("max_top must be >= 1")
        keys = [t.access_key_id for t in self.tenants]
        names = [t.name for t in self.tenants]
        if len(set(keys)) != len(keys) or len(set(names)) != len(names):
            raise ValueError("tenant names and access key ids must be unique")

    def scaled(self, platform_seconds: float) -> float:
        """Real seconds for a platform duration, compressed by ``time_scale``."""
        return platform_seconds / self.time_scale

    def tenant_rate(self, tenant: CxTenant) -> float:
        return self.rate if tenant.rate is None else tenant.rate
