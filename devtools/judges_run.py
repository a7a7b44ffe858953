"""The real platforms in a whole-process run: their simulator flavours in this event loop, their
``[[streams]]`` entries and secrets, and their verdicts by the judges (``ccstream demo``).

``real_platforms(("cxone", "genesys-cloud"), seed=7, chaos=True)`` starts one CXone simulator
(one tenant) and one Genesys Cloud simulator (one OAuth client), each with its ``chaos`` preset
when asked, plus one scheduled fault each so that a gap and its backfill are always there to see:
a ``stall`` on CXone, a ``channel_gone`` on Genesys Cloud. ``RealPlatform.judge`` hands the
records and reported gaps to the judge of its platform with the stream's own settings, so that
the run and the judge cannot disagree on ``poll_interval_s`` or ``settle_s``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from devtools.e2e import cxone_stream, gc_stream, secret_env
from devtools.judges import Evidence, Rec, Verdict
from devtools.judges_cxone import CxoneSpec, judge_cxone
from devtools.judges_gc import GcSpec, judge_gc
from simulator.cxone import CxFault, CxoneSimulator, CxSettings, CxTenant
from simulator.genesys_cloud import GcClient, GcFault, GcSettings, GenesysCloudSimulator

PLATFORMS = ("cxone", "genesys-cloud")
SETTLE_S = 10.0                  # >= 2 x the flavours' completion lag and analytics lag
CX_POLL_S = 1.0
CX_TIME_SCALE = 60.0             # a 1 h CXone token lives 60 s
GC_TIME_SCALE = 10.0             # heartbeat 3 s, closing notice 6 s, 60 s rate window 6 s
GC_TOPICS = ("v2.routing.queues.{queue}.conversations", "v2.users.{user}?presence&routingStatus",
             "v2.users.{user}.conversations")
GONE_AT_S = 15.0                 # the scheduled channel_gone on Genesys Cloud
STALL_AT_S = 8.0                 # the scheduled stall on CXone


@dataclass
class RealPlatform:
    """One real-platform stream of the run and the simulator flavour it talks to."""

    platform: str
    stream: str
    entry: dict[str, Any]
    secrets: dict[str, str]
    cx: CxoneSimulator | None = None
    gc: GenesysCloudSimulator | None = None
    shutdown_at: float | None = None
    seen_faults: dict[str, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return str(self.entry.get("access_key_id") or self.entry["client_id"])

    def now(self) -> float:
        """The clock of the flavour's ledger (CXone: the server clock on the wire)."""
        if self.cx is not None:
            return self.cx.server_ms() / 1000
        assert self.gc is not None
        return self.gc.now()

    def mark_shutdown(self) -> None:
        """Call just before the connector's SIGTERM: the judges' clean shutdown."""
        self.shutdown_at = self.now()

    def stop_generating(self) -> None:
        if self.cx is not None:
            self.cx.stop_generating()
        if self.gc is not None:
            self.gc.stop_generating()

    def faults_fired(self) -> dict[str, int]:
        """The flavour's faults fired so far, by kind."""
        if self.cx is not None:
            fired = self.cx.stats_of(self.key).faults
        else:
            assert self.gc is not None
            fired = self.gc.stats_of(self.key).faults
        return {str(k): v for k, v in fired.items()}

    def rules(self) -> dict[str, int]:
        if self.cx is not None:
            return self.cx.rules(self.key)
        assert self.gc is not None
        return self.gc.rules(self.key)

    def judge(self, raw: Sequence[Rec], clean: Sequence[Rec],
              gap_lines: Sequence[Mapping[str, Any]],
              open_gaps: Sequence[Sequence[Any]]) -> Verdict:
        shutdown = self.now() if self.shutdown_at is None else self.shutdown_at
        evidence = Evidence(raw, clean, gap_lines, open_gaps, shutdown, self.rules())
        if self.cx is not None:
            spec = CxoneSpec(stream=self.stream, access_key=self.key,
                             poll_interval_s=float(self.entry["poll_interval_s"]),
                             settle_s=float(self.entry["settle_s"]))
            return judge_cxone(self.cx.ledger.to_json(self.key, min_outage_s=0.0), spec,
                               evidence)
        assert self.gc is not None
        gc_spec = GcSpec(stream=self.stream, client_id=self.key,
                         topics=tuple(self.entry["topics"]), settle_s=float(self.entry["settle_s"]))
        return judge_gc(self.gc.ledger.to_json(self.key), gc_spec, evidence)


async def _cxone(stack: AsyncExitStack, seed: int, chaos: bool, prefix: str) -> RealPlatform:
    name = f"{prefix}cxone-1"
    secret, app_secret = f"ak-secret-{name}", f"app-secret-{name}"
    tenant = CxTenant(f"{prefix}tenant", access_key_id=f"{prefix}AK1", access_key_secret=secret,
                      client_id=f"{prefix}app", client_secret=app_secret, agents=8, skills=3)
    # retention stays 24 h of real time (not compressed): the first poll asks for the last hour
    settings = CxSettings(tenants=(tenant,), seed=seed, rate=4.0, time_scale=CX_TIME_SCALE,
                          retention_s=24 * 3600.0 * CX_TIME_SCALE,
                          preset="chaos" if chaos else None, preset_interval_s=8.0,
                          completion_lag_s=SETTLE_S / 2 - 1)
    sim = await stack.enter_async_context(CxoneSimulator(settings))
    # one answer held past open_timeout_s: an outage over 3 x poll_interval_s, a gap, a backfill
    sim.inject(CxFault(kind="stall", access_key=tenant.access_key_id, at_s=STALL_AT_S))
    entry = cxone_stream(name, sim.base_url, tenant.access_key_id, tenant.client_id,
                         poll_interval_s=CX_POLL_S, settle_s=SETTLE_S)
    secrets = {secret_env(name, "ACCESS_KEY_SECRET"): secret, secret_env(name): app_secret}
    return RealPlatform("cxone", name, entry, secrets, cx=sim)


async def _genesys_cloud(stack: AsyncExitStack, seed: int, chaos: bool,
                         prefix: str) -> RealPlatform:
    name = f"{prefix}genesys-cloud-1"
    client = GcClient(f"{prefix}gc-client", f"gc-secret-{name}", queues=3, users=4)
    # replace_grace_s = 10: the socket-overlap rule is measured as the contract's judge does
    settings = GcSettings(clients=(client,), seed=seed, rate=8.0, time_scale=GC_TIME_SCALE,
                          preset="chaos" if chaos else None, preset_interval_s=8.0,
                          replace_grace_s=10.0)
    sim = await stack.enter_async_context(GenesysCloudSimulator(settings))
    sim.inject(GcFault(kind="channel_gone", client=client.client_id, at_s=GONE_AT_S))
    entry = gc_stream(name, sim.base_url, client.client_id, GC_TOPICS, settle_s=SETTLE_S,
                      health_after_s=4.0, health_timeout_s=1.0)
    return RealPlatform("genesys-cloud", name, entry, {secret_env(name): client.secret}, gc=sim)


@asynccontextmanager
async def real_platforms(platforms: Iterable[str], *, seed: int, chaos: bool,
                         prefix: str = "") -> AsyncIterator[list[RealPlatform]]:
    """The flavours of ``platforms`` (a subset of ``PLATFORMS``), started; stopped at exit."""
    async with AsyncExitStack() as stack:
        out = []
        for platform in platforms:
            if platform == "cxone":
                out.append(await _cxone(stack, seed, chaos, prefix))
            elif platform == "genesys-cloud":
                out.append(await _genesys_cloud(stack, seed, chaos, prefix))
            else:
                raise ValueError(f"unknown real platform {platform!r} (known: "
                                 f"{', '.join(PLATFORMS)})")
        yield out
