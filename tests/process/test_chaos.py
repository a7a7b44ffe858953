"""The chaos suite: whole processes, the real broker, the simulator; nothing lost, nothing doubled.

Each scenario runs the connector and the dedup worker as real OS processes (``python -m pipeline
connect|dedup``) against the simulator in this test's event loop and the real Apache Kafka
broker, does something nasty (faults, kill -9, SIGTERM, a broker lost), stops the traffic, and
compares the simulator's ledger of every distinct event it emitted with the clean topic read
``read_committed``: missing and duplicated must both be zero. Every scenario adds a row to the
table printed at the end of the run (scenario, events, missing, duplicated, recovery time).

Recovery time is the time from the last disruption until the clean topic holds every event the
simulator had emitted at the moment of that disruption.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devtools import devkafka
from devtools.e2e import (
    ProcessGroup,
    StreamPlan,
    Verdict,
    compare,
    emitted,
    log_events,
    pipeline_config,
    plan_streams,
    read_topic,
)
from devtools.live import TopicTail
from simulator import ClientSpec, Fault, SimSettings, Simulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

# Connector clocks for tests: quick retries, quick silent-drop detection (the simulator's own
# ping windows stay at the platform's 15 s / 30 s, far above these intervals).
FAST_CONNECTOR: dict[str, Any] = {
    "backoff_base_s": 0.1, "backoff_max_s": 2.0, "breaker_cooldown_s": 2.0,
    "pong_timeout_s": 0.5, "reconnects_per_second": 50.0, "reconnect_burst": 20,
    "cursor_commit_interval_s": 0.3, "grace_period_s": 12.0,
}
FAST_PINGS = {"genesys": {"ping_interval_s": 0.5}, "nice": {"ping_interval_s": 0.5}}


@dataclass
class Chaos:
    """One scenario's running pipeline."""

    sim: Simulator
    group: ProcessGroup
    clean: TopicTail
    bootstrap: str
    topics: dict[str, str]
    plans: list[StreamPlan]
    disrupted_at: float = 0.0
    emitted_at_disruption: dict[str, str] = field(default_factory=dict)

    def ledger(self) -> dict[str, str]:
        return emitted(self.sim.ledger)

    def disrupted(self) -> None:
        """Mark now as the last disruption (for the recovery time)."""
        self.disrupted_at = time.monotonic()
        self.emitted_at_disruption = self.ledger()

    async def flowing(self, events: int, within_s: float = 60.0) -> None:
        """Wait until ``events`` more distinct events reached the clean topic."""
        target = len(self.clean.view.counts) + events
        await _until(lambda: len(self.clean.view.counts) >= target, within_s,
                     f"{events} more events in clean")

    async def finish(self, table: list[dict[str, Any]], name: str,
                     drain_s: float = 90.0) -> Verdict:
        """Stop traffic, drain, compare, record the row, and assert nothing lost or doubled."""
        recovery = await self._recovery_s(drain_s)
        self.sim.stop_generating()
        ledger = self.ledger()
        await _until(lambda: all(k in self.clean.view.counts for k in ledger), drain_s,
                     "clean topic holding every emitted event", raise_on_timeout=False)
        verdict = compare(ledger, await read_topic(self.bootstrap, self.topics["clean"]))
        table.append({"scenario": name, "events": verdict.emitted, "missing": verdict.missing,
                      "duplicated": verdict.duplicated, "recovery_s": recovery})
        assert verdict.ok, verdict.to_json()
        return verdict

    async def _recovery_s(self, within_s: float) -> float | None:
        if not self.disrupted_at:
            return None
        wanted = self.emitted_at_disruption
        await _until(lambda: all(k in self.clean.view.counts for k in wanted), within_s,
                     "catching up after the disruption", raise_on_timeout=False)
        return round(time.monotonic() - self.disrupted_at, 2)


async def _until(predicate: Callable[[], bool], within_s: float, what: str,
                 raise_on_timeout: bool = True) -> bool:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise AssertionError(f"timed out after {within_s} s waiting for {what}")
            return False
        await asyncio.sleep(0.2)
    return True


@asynccontextmanager
async def chaos(bootstrap: str, work_dir: Path, prefix: str, plans: list[StreamPlan], *,
                rate: float = 20.0, sim_extra: dict[str, Any] | None = None,
                connector: dict[str, Any] | None = None, replication: int = 1,
                start: tuple[str, ...] = ("dedup", "connect")) -> AsyncIterator[Chaos]:
    """Simulator + config + the ccstream processes of ``start``; everything stopped at exit."""
    clients = tuple(ClientSpec(p.client_id, p.secret, platforms=(p.platform,)) for p in plans)
    settings = SimSettings(clients=clients, seed=11, rate=rate, **(sim_extra or {}))
    async with Simulator(settings) as sim:
        urls = {platform: sim.stream_url(platform) for platform in ("genesys", "nice")}
        config = work_dir / "ccstream.toml"
        config.write_text(pipeline_config(
            bootstrap, plans, urls=urls, token_url=sim.token_url, prefix=prefix,
            overrides={"kafka": {"partitions": 3, "replication_factor": replication},
                       "connector": {**FAST_CONNECTOR, **(connector or {})},
                       "dedup": {"session_timeout_s": 4.0, "commit_interval_s": 0.3}},
            per_platform=FAST_PINGS))
        group = ProcessGroup(config, work_dir / "logs", env={p.secret_env: p.secret for p in plans})
        topics = {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean"}
        run = Chaos(sim, group, TopicTail(bootstrap, topics["clean"]), bootstrap, topics, plans)
        try:
            for kind in start:
                group.start(kind)
            await run.clean.start()
            yield run
        finally:
            await run.clean.stop()
            await asyncio.to_thread(group.stop_all)


# -- scenarios -------------------------------------------------------------------------------

# Each survivable fault of the simulator, one per stream (streams are separate tenants, so each
# fault hits its stream alone). Excluded on purpose: purge (loses events by definition; the gap
# report is tested in the connector's tests), handshake 403 and token 401 invalid_client (the
# stream stops by contract; tested in the connector's tests).
SINGLE_FAULTS: dict[str, dict[str, Any]] = {
    "close-1000": {"kind": "close", "code": 1000},
    "close-1000-auth": {"kind": "close", "code": 1000, "reason": "token_expired"},
    "close-1001": {"kind": "close", "code": 1001},
    "close-1008": {"kind": "close", "code": 1008},
    "close-1011": {"kind": "close", "code": 1011},
    "close-1012": {"kind": "close", "code": 1012},
    "close-1013": {"kind": "close", "code": 1013, "retry_after": 1.0},
    "close-1014": {"kind": "close", "code": 1014},
    "closing-notice": {"kind": "closing_notice", "delay_s": 1.0},
    "silent-drop": {"kind": "silent", "duration_s": 8.0},
    "tcp-reset": {"kind": "reset"},
    "stall": {"kind": "stall", "duration_s": 2.0},
    "malformed": {"kind": "malformed"},
    "handshake-401": {"kind": "handshake_error", "status": 401},
    "handshake-429": {"kind": "handshake_error", "status": 429, "retry_after": 1.0},
    "handshake-503": {"kind": "handshake_error", "status": 503, "retry_after": 1.0},
    "token-400": {"kind": "token_error", "status": 400},
    "token-429": {"kind": "token_error", "status": 429, "retry_after": 1.0},
    "token-503": {"kind": "token_error", "status": 503, "retry_after": 1.0},
    "expire-token": {"kind": "expire_token"},
    "maintenance": {"kind": "maintenance", "duration_s": 2.0, "delay_s": 0.5},
    "mass-disconnect": {"kind": "mass_disconnect"},
}
# answer faults must meet a reconnect to show: each of those streams is also closed once
NEEDS_RECONNECT = {"handshake-401", "handshake-429", "handshake-503", "token-400", "token-429",
                   "token-503"}


async def test_every_fault_alone(bootstrap: str, tmp_path: Path, topic_prefix: str,
                                 chaos_table: list[dict[str, Any]]) -> None:
    """Each simulator fault, alone on its own stream, loses and duplicates nothing."""
    plans = [StreamPlan(f"f-{name}", "genesys" if i % 2 else "nice", f"f-{name}", f"pw-{name}")
             for i, name in enumerate(SINGLE_FAULTS)]
    async with chaos(bootstrap, tmp_path, topic_prefix, plans, rate=15.0) as run:
        await run.flowing(200)
        for plan, (name, spec) in zip(plans, SINGLE_FAULTS.items(), strict=True):
            run.sim.inject(Fault(**{**spec, "client": plan.client_id}))
            if name in NEEDS_RECONNECT:
                run.sim.inject(Fault(kind="close", code=1012, client=plan.client_id))
        run.disrupted()
        await run.flowing(300)
        await run.finish(chaos_table, f"every fault alone ({len(plans)} streams)")
        for plan in plans:
            assert run.sim.stats[plan.client_id].handshakes_expired_token == 0, plan.name


async def test_connector_kill9_three_rounds(bootstrap: str, tmp_path: Path, topic_prefix: str,
                                            chaos_table: list[dict[str, Any]]) -> None:
    """kill -9 of the connector mid-stream, three times, then restart: nothing lost."""
    async with chaos(bootstrap, tmp_path, topic_prefix, plan_streams(2, 2)) as run:
        for _ in range(3):
            await run.flowing(150)
            await asyncio.to_thread(run.group.kill, "connect")
            run.disrupted()
            await asyncio.sleep(0.5)  # events pile up in the platform's retention meanwhile
            run.group.start("connect")
        await run.flowing(150)
        await run.finish(chaos_table, "connector kill -9 x3")


async def test_dedup_kill9_three_rounds(bootstrap: str, tmp_path: Path, topic_prefix: str,
                                        chaos_table: list[dict[str, Any]]) -> None:
    """kill -9 of the dedup worker mid-stream, three times, then restart: exactly once."""
    async with chaos(bootstrap, tmp_path, topic_prefix, plan_streams(2, 2)) as run:
        for _ in range(3):
            await run.flowing(150)
            await asyncio.to_thread(run.group.kill, "dedup")
            run.disrupted()
            run.group.start("dedup")
        await run.flowing(150)
        await run.finish(chaos_table, "dedup worker kill -9 x3")


async def test_sigterm_rolling_restart(bootstrap: str, tmp_path: Path, topic_prefix: str,
                                       chaos_table: list[dict[str, Any]]) -> None:
    """SIGTERM of each process in turn while events flow: clean exits, closes, nothing lost."""
    plans = plan_streams(2, 2)
    async with chaos(bootstrap, tmp_path, topic_prefix, plans) as run:
        for kind in ("connect", "dedup", "connect"):
            await run.flowing(150)
            closes_before = sum(run.sim.stats[p.client_id].close_codes[1000] for p in plans)
            # in a thread: the simulator on this loop must keep answering the close handshakes
            code = await asyncio.to_thread(run.group.terminate, kind, 13.0)
            assert code == 0, f"{kind} did not exit 0"
            run.disrupted()
            if kind == "connect":  # every connection was closed with a 1000 close frame
                closes = sum(run.sim.stats[p.client_id].close_codes[1000] for p in plans)
                assert closes - closes_before >= len(plans)
            run.group.start(kind)
        await run.flowing(150)
        await run.finish(chaos_table, "SIGTERM rolling restart")


async def test_mass_disconnect_of_50_streams_respects_the_host_cap(
    bootstrap: str, tmp_path: Path, topic_prefix: str, chaos_table: list[dict[str, Any]]
) -> None:
    """50 streams dropped at once reconnect spread out, never above the per-host cap."""
    rate, burst = 20.0, 5
    plans = plan_streams(25, 25)
    async with chaos(bootstrap, tmp_path, topic_prefix, plans, rate=4.0,
                     sim_extra={"max_connections": 5},
                     connector={"reconnects_per_second": rate, "reconnect_burst": burst,
                                "backoff_base_s": 0.5, "backoff_max_s": 4.0}) as run:
        await _until(lambda: all(run.sim.stats[p.client_id].handshakes_opened >= 1
                                 for p in plans), 60, "all 50 streams connected")
        await run.flowing(200)
        dropped_at = time.time()
        run.sim.inject(Fault(kind="mass_disconnect"))
        run.disrupted()
        await _until(lambda: all(run.sim.stats[p.client_id].handshakes_opened >= 2
                                 for p in plans), 60, "all 50 streams back")
        await run.finish(chaos_table, "mass disconnect of 50 streams")
    log = run.group.procs["connect"].log_path
    # every handshake attempt ends in exactly one of these lines
    attempts = sorted(_ts(doc) for event in ("ws.connected", "ws.handshake_rejected",
                                             "ws.connect_failed")
                      for doc in log_events(log, event) if _ts(doc) >= dropped_at)
    assert len(attempts) >= len(plans)
    # token bucket: in any window of w seconds at most burst + rate * w attempts (+1 rounding)
    for i, start in enumerate(attempts):
        for j in range(i, len(attempts)):
            window = attempts[j] - start
            assert j - i + 1 <= burst + rate * window + 1, (start, attempts[j], j - i + 1)
    assert attempts[-1] - attempts[0] > 1.0  # spread by jitter and the cap, not one wave


def _ts(doc: dict[str, Any]) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(doc["ts"])).timestamp()


async def test_an_hour_of_tokens_compressed(bootstrap: str, tmp_path: Path, topic_prefix: str,
                                            chaos_table: list[dict[str, Any]]) -> None:
    """Tokens expiring every few seconds (1 h scaled) with clock skew: never a stale handshake."""
    scale = 600.0  # NICE 1 h token -> 6 s, Genesys 2 h -> 12 s
    plans = plan_streams(2, 2)
    async with chaos(bootstrap, tmp_path, topic_prefix, plans,
                     sim_extra={"time_scale": scale, "clock_skew_s": -1.0},
                     connector={"token_safety_buffer_s": 300.0 / scale}) as run:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            run.sim.inject(Fault(kind="close", code=1012,
                                 client=plans[int(time.monotonic()) % len(plans)].client_id))
        run.disrupted()
        await run.finish(chaos_table, "1 h of token lifetime in 30 s")
        for plan in plans:
            stats = run.sim.stats[plan.client_id]
            assert stats.handshakes_expired_token == 0, plan.name
            assert sum(stats.token_grants.values()) >= 3, plan.name


async def test_losing_one_of_three_brokers(tmp_path: Path, topic_prefix: str,
                                           chaos_table: list[dict[str, Any]]) -> None:
    """A 3-broker cluster loses a broker mid-stream and gets it back: nothing lost or doubled."""
    cluster = devkafka.KafkaCluster(tmp_path / "kafka3", size=3, heap="256m")
    await asyncio.to_thread(cluster.start)
    try:
        bootstrap = cluster.bootstrap_servers
        async with chaos(bootstrap, tmp_path, topic_prefix, plan_streams(1, 1),
                         replication=3) as run:
            await run.flowing(150)
            await asyncio.to_thread(cluster.stop_node, 2, kill=True)
            run.disrupted()
            await run.flowing(150)
            await asyncio.to_thread(cluster.start_node, 2)
            await run.flowing(150)
            await run.finish(chaos_table, "3 brokers, one lost and back")
    finally:
        await asyncio.to_thread(cluster.stop)
