"""The real platforms end to end: ``ccstream connect`` + ``ccstream dedup`` as real processes on the
real broker against the CXone and Genesys Cloud simulator flavours (in this test's event loop)
under their ``chaos`` preset, with one ``kill -9`` of the connector mid-run and a restart, so
that down time is exercised: a ``process_down`` gap reported, then backfilled.

Then traffic stops, the pipeline drains, both processes get SIGTERM, and the judges of
``devtools/judges_*`` (the contracts' "judge's view", cxone.md s.9 and genesys-cloud.md s.11)
weigh the simulator's ledger against the raw and clean topics and the reported gaps: nothing
lost by any rule, nothing duplicated in clean, no client rule broken. Each scenario adds a row
to the chaos table (recovery: from the kill until the backfill of the gap that covers it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from ccstream.timefmt import parse_rfc3339
from devtools.e2e import (
    ProcessGroup,
    cxone_stream,
    gc_stream,
    log_lines,
    pipeline_config,
    read_cursor,
    read_records,
    secret_env,
)
from devtools.judges import Evidence, Verdict
from devtools.judges_cxone import CxoneSpec, judge_cxone
from devtools.judges_gc import GcSpec, judge_gc
from devtools.live import TopicTail
from simulator.cxone import CxoneSimulator, CxSettings, CxTenant
from simulator.genesys_cloud import GcClient, GcSettings, GenesysCloudSimulator

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

FAST_CONNECTOR: dict[str, Any] = {
    "backoff_base_s": 0.1, "backoff_max_s": 2.0, "breaker_cooldown_s": 2.0,
    "reconnects_per_second": 50.0, "reconnect_burst": 20, "cursor_commit_interval_s": 0.3,
    "grace_period_s": 12.0,
}
SETTLE_S = 10.0          # >= 2 x the simulators' completion / analytics lag
LIVE_S = 62.0            # the kill's gap must end settle_s + 30 s before the shutdown
KILL_AT_S, DOWN_S = 10.0, 5.0
# the simulators' seed (events and the chaos schedule); another one explores other storms
SEED = int(os.environ.get("CCSTREAM_E2E_SEED", "11"))


@dataclass
class Pipeline:
    """The two ccstream processes of one scenario, their topics and a tail of raw and clean."""

    group: ProcessGroup
    bootstrap: str
    topics: dict[str, str]
    raw: TopicTail
    clean: TopicTail
    started: float

    def lines(self) -> list[dict[str, Any]]:
        return log_lines(self.group.procs["connect"].log_path)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == name]

    async def at(self, offset_s: float) -> None:
        """Sleep until ``offset_s`` after the start, failing early if a process died."""
        while time.monotonic() < self.started + offset_s:
            for proc in self.group.procs.values():
                tail = "" if proc.alive() else proc.log_path.read_text()[-3000:]
                assert proc.alive(), f"ccstream {proc.kind} exited: {tail}"
            await asyncio.sleep(0.2)


@asynccontextmanager
async def pipeline(bootstrap: str, work_dir: Path, prefix: str, stream: dict[str, Any],
                   secrets: dict[str, str]) -> AsyncIterator[Pipeline]:
    config = work_dir / "ccstream.toml"
    config.write_text(pipeline_config(
        bootstrap, [], urls={}, token_url="", prefix=prefix, extra_streams=[stream],
        overrides={"kafka": {"partitions": 3}, "connector": FAST_CONNECTOR,
                   "dedup": {"session_timeout_s": 4.0, "commit_interval_s": 0.3}}))
    group = ProcessGroup(config, work_dir / "logs", env=secrets)
    topics = {k: f"{prefix}.{k}" for k in ("raw", "clean", "cursors")}
    run = Pipeline(group, bootstrap, topics, TopicTail(bootstrap, topics["raw"]),
                   TopicTail(bootstrap, topics["clean"]), time.monotonic())
    try:
        group.start("dedup")
        group.start("connect")
        await run.raw.start()
        await run.clean.start()
        yield run
    finally:
        await run.raw.stop()
        await run.clean.stop()
        await asyncio.to_thread(group.stop_all)


async def _until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.2)


async def _kill_and_restart(run: Pipeline) -> float:
    """kill -9 of the connector, ``DOWN_S`` of down time, a restart; the kill's wall time."""
    await run.at(KILL_AT_S)
    assert run.raw.view.records > 0, "nothing reached raw before the kill"
    killed = time.time()
    await asyncio.to_thread(run.group.kill, "connect")
    await asyncio.sleep(DOWN_S)
    run.group.start("connect")
    return killed


def _recovery_s(run: Pipeline, stream: str, killed: float) -> float | None:
    """From the kill until ``backfill.done`` of a gap holding the kill instant."""
    for line in run.events("backfill.done"):
        a, b = parse_rfc3339(line.get("from")), parse_rfc3339(line.get("to"))
        if line.get("stream") == stream and a is not None and b is not None and a <= killed <= b:
            done = parse_rfc3339(line.get("ts"))
            return None if done is None else round(done - killed, 2)
    return None


async def _stop(run: Pipeline) -> None:
    """SIGTERM the connector (exit 0), let dedup catch up with raw, SIGTERM dedup (exit 0)."""
    code = await asyncio.to_thread(run.group.terminate, "connect", 15.0)
    assert code == 0, "the connector did not exit 0 on SIGTERM"
    raw_keys = await _raw_keys(run)
    await _until(lambda: raw_keys <= set(run.clean.view.counts), 40,
                 "clean holding every dedup key of raw")
    run.group.procs["dedup"].signal(signal.SIGTERM)
    assert await asyncio.to_thread(run.group.procs["dedup"].wait, 15.0) == 0


async def _raw_keys(run: Pipeline) -> set[str]:
    return {r.dedup_key or "?" for r in await read_records(run.bootstrap, run.topics["raw"])}


async def _evidence(run: Pipeline, stream: str, shutdown_at: float,
                    rules: dict[str, int]) -> Evidence:
    cursor = await read_cursor(run.bootstrap, run.topics["cursors"], stream) or {}
    return Evidence(raw=await read_records(run.bootstrap, run.topics["raw"]),
                    clean=await read_records(run.bootstrap, run.topics["clean"]),
                    gap_lines=run.events("stream.gap"), open_gaps=cursor.get("open_gaps", []),
                    shutdown_at=shutdown_at, rules=rules)


def _row(table: list[dict[str, Any]], name: str, verdict: Verdict,
         recovery: float | None) -> None:
    table.append({"scenario": name, "events": verdict.counts["clean"],
                  "missing": len(verdict.lost), "duplicated": len(verdict.duplicated),
                  "recovery_s": recovery})
    print(verdict.summary(), dict(verdict.counts), dict(verdict.rule_breaks))


def _assert_down_time_filled(run: Pipeline, stream: str, verdict: Verdict,
                             recovery: float | None) -> None:
    reasons = [g.get("reason") for g in run.events("stream.gap") if g.get("stream") == stream]
    assert "process_down" in reasons, f"no process_down gap after the kill -9: {reasons}"
    assert recovery is not None, "the kill's gap was never backfilled (no backfill.done)"
    assert verdict.ok, verdict.to_json()


def _assert_judge_has_teeth(judge: Callable[[Evidence], Verdict], evidence: Evidence) -> None:
    """The same run with planted losses fails each rule: the verdict above was not vacuous."""
    live = [r for r in evidence.raw if r.source == "live"]
    dropped = {id(r) for r in live[::10]}
    thinned = replace(evidence, raw=[r for r in evidence.raw if id(r) not in dropped])
    assert judge(thinned).lost_by_rule()[1] > 0, "dropping live records went unseen"
    unfilled = replace(evidence, raw=[r for r in evidence.raw if r.source != "backfill"])
    assert judge(unfilled).lost_by_rule()[2] > 0, "dropping the backfill went unseen"
    unreported = replace(evidence, gap_lines=[], open_gaps=[])
    assert judge(unreported).lost_by_rule()[3] > 0, "hiding the gaps went unseen"


def _keep_evidence(work_dir: Path, ledger: dict[str, Any], evidence: Evidence) -> None:
    """The ledger (with rows), the raw records and the gaps beside the connector's logs, so
    that a failing seed can be read after the run (``--basetemp``)."""
    raw = [{"dedup_key": r.dedup_key, "source": r.source, "gap": r.header("ccstream-gap"),
            "value": r.value.decode("utf-8", "replace")} for r in evidence.raw]
    (work_dir / "evidence.json").write_text(json.dumps({
        "ledger": ledger, "raw": raw, "gap_lines": list(evidence.gap_lines),
        "open_gaps": list(evidence.open_gaps), "shutdown_at": evidence.shutdown_at}))


# -- CXone --------------------------------------------------------------------------------------
CX_KEY, CX_KEY_SECRET, CX_APP, CX_APP_SECRET = "AK1", "ak-s3cret-e2e", "app", "app-s3cret-e2e"
CX_POLL_S = 1.0


async def test_cxone_chaos_with_a_connector_kill9(bootstrap: str, tmp_path: Path,
                                                  topic_prefix: str,
                                                  chaos_table: list[dict[str, Any]]) -> None:
    """CXone under chaos, the connector killed and restarted: 0 lost by s.9, 0 duplicated."""
    tenant = CxTenant("acme", access_key_id=CX_KEY, access_key_secret=CX_KEY_SECRET,
                      client_id=CX_APP, client_secret=CX_APP_SECRET, agents=8, skills=3)
    # platform time x 60 (a token lives 60 s) but retention kept at 24 h real: the first poll
    # asks for the last hour, which must not be older than retention
    settings = CxSettings(tenants=(tenant,), seed=SEED, rate=4.0, time_scale=60.0,
                          retention_s=24 * 3600.0 * 60, preset="chaos", preset_interval_s=6.0,
                          completion_lag_s=4.0)
    name = "cx-e2e"
    async with CxoneSimulator(settings) as sim:
        stream = cxone_stream(name, sim.base_url, CX_KEY, CX_APP, poll_interval_s=CX_POLL_S,
                              settle_s=SETTLE_S)
        secrets = {secret_env(name, "ACCESS_KEY_SECRET"): CX_KEY_SECRET,
                   secret_env(name): CX_APP_SECRET}
        async with pipeline(bootstrap, tmp_path, topic_prefix, stream, secrets) as run:
            killed = await _kill_and_restart(run)
            await run.at(LIVE_S)
            sim.stop_generating()
            await asyncio.sleep(3 * CX_POLL_S)       # the last changes polled and acknowledged
            shutdown_at = sim.server_ms() / 1000
            await _stop(run)
            evidence = await _evidence(run, name, shutdown_at, sim.rules(CX_KEY))
            ledger = sim.ledger.to_json(CX_KEY, min_outage_s=0.0)
            _keep_evidence(tmp_path, sim.ledger.to_json(CX_KEY, rows=True, min_outage_s=0.0),
                           evidence)
    spec = CxoneSpec(stream=name, access_key=CX_KEY, poll_interval_s=CX_POLL_S,
                     settle_s=SETTLE_S)
    verdict = judge_cxone(ledger, spec, evidence)
    (tmp_path / "verdict.json").write_text(json.dumps(verdict.to_json(sample=100), indent=1))
    recovery = _recovery_s(run, name, killed)
    print(f"CCSTREAM_E2E_SEED={SEED}; evidence in {tmp_path}")  # to run this storm again
    _row(chaos_table, "cxone: chaos + connector kill -9", verdict, recovery)
    # not vacuous: ~650 versions, of which 78-150 (by seed) are current 2 s outside every gap;
    # the planted losses below are the judge's real check
    assert verdict.counts["versions_judged"] > 50
    _assert_down_time_filled(run, name, verdict, recovery)
    _assert_judge_has_teeth(lambda e: judge_cxone(ledger, spec, e), evidence)


# -- Genesys Cloud ------------------------------------------------------------------------------
GC_CLIENT, GC_SECRET = "acme", "gc-s3cret-e2e"
GC_TOPICS = ("v2.routing.queues.{queue}.conversations", "v2.users.{user}?presence&routingStatus",
             "v2.users.{user}.conversations")


async def test_genesys_cloud_chaos_with_a_connector_kill9(
    bootstrap: str, tmp_path: Path, topic_prefix: str, chaos_table: list[dict[str, Any]]
) -> None:
    """Genesys Cloud under chaos, the connector killed and restarted: 0 lost by s.11, 0
    duplicated; the socket overlap rule measured with the judge's replace_grace_s = 10."""
    settings = GcSettings(clients=(GcClient(GC_CLIENT, GC_SECRET, queues=3, users=4),), seed=SEED,
                          rate=8.0, time_scale=10.0, preset="chaos", preset_interval_s=6.0,
                          replace_grace_s=10.0)
    name = "gc-e2e"
    async with GenesysCloudSimulator(settings) as sim:
        stream = gc_stream(name, sim.base_url, GC_CLIENT, GC_TOPICS, settle_s=SETTLE_S,
                           health_after_s=4.0, health_timeout_s=1.0)
        async with pipeline(bootstrap, tmp_path, topic_prefix, stream,
                            {secret_env(name): GC_SECRET}) as run:
            killed = await _kill_and_restart(run)
            await run.at(LIVE_S)
            sim.stop_generating()
            await asyncio.sleep(2.0)               # the last notifications acknowledged
            shutdown_at = sim.now()
            await _stop(run)
            evidence = await _evidence(run, name, shutdown_at, sim.rules(GC_CLIENT))
            ledger = sim.ledger.to_json(GC_CLIENT)
    spec = GcSpec(stream=name, client_id=GC_CLIENT, topics=GC_TOPICS, settle_s=SETTLE_S)
    verdict = judge_gc(ledger, spec, evidence)
    recovery = _recovery_s(run, name, killed)
    _row(chaos_table, "genesys-cloud: chaos + connector kill -9", verdict, recovery)
    assert verdict.counts["notifications_judged"] > 100
    _assert_down_time_filled(run, name, verdict, recovery)
    _assert_judge_has_teeth(lambda e: judge_gc(ledger, spec, e), evidence)
