"""Cluster mode when Kafka loses one broker of three during a takeover (design §5.7, test 8).

A 3-broker cluster of its own (``KafkaCluster(size=3)``: RF 3, min ISR 2; the session broker
is not touched), three ``ccstream connect`` instances in cluster mode over a simulator with a
dozen streams (6 Genesys in single-session mode, 6 NICE, each its own tenant), steady state.
Then, at the same moment, kill -9 of one instance **and** SIGKILL of the broker that is the
transaction coordinator of some of its slots' transactional ids (preferably also the cursor
topic's partition leader, preferably not the group coordinator: see ``_choose``): the survivors
take the victim's slots over (fence = InitProducerId on the tid, read the cursors to the high
watermark, connect) while the coordinators and the cursor partition move to the other brokers.

Asserted: every stream owned again and connected within ``RECOVERY_BOUND_S`` (session timeout
+ transaction timeout + a few seconds: the broker's own failure detection,
``broker.session.timeout.ms`` = 3 s here, plus 2 s); cursor commits resume (a new committed
cursor, read ``read_committed``, of every stream, by a survivor, after the broker loss); then the
broker restarts and the cluster stays healthy (nobody loses a stream, commits go on, the ISR is
whole again); over the whole run nothing is lost (ledger ⊆ raw by dedup key and payload hash),
committed cursors never move backwards, and at the end each stream has exactly one owner (the
instances' logs, the simulator's connections and the group's assignment agree).

The chaos table gets one row: ``recovery s`` = kill until every stream is owned and connected
again; ``gap`` = the longest time a stream had no connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from support.cluster import (
    Cluster,
    Instance,
    cursor_records,
    events,
    row,
    running_cluster,
    steps_back,
    ts,
    until,
)

from connectors.cluster.group import describe_once
from connectors.policy.slots import slot_of
from devtools.devkafka import DevKafkaError, KafkaCluster
from devtools.e2e import compare, plan_streams, read_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SESSION_S = 2.0
HEARTBEAT_S = 0.4
TXN_TIMEOUT_S = 5.0
SLOTS = 8
GRACE_S = 12.0
# the brokers notice a dead broker (fence it, move its leaderships, shrink its ISRs) after
# this; Kafka's default is 9 s, lowered so that the test measures ccstream, not the controller
BROKER_SESSION_S = 3.0
RECOVERY_BOUND_S = SESSION_S + TXN_TIMEOUT_S + BROKER_SESSION_S + 2.0
# watched once the broker is back: no stream loses its connection, every stream commits
HEALTHY_WINDOW_S = 5.0
PLANS = plan_streams(6, 6, prefix="b-")
BROKER_SETTINGS = {"broker.session.timeout.ms": str(int(BROKER_SESSION_S * 1000)),
                   "broker.heartbeat.interval.ms": "500"}
CONNECTOR: dict[str, Any] = {
    "backoff_base_s": 0.1, "backoff_max_s": 2.0, "breaker_cooldown_s": 2.0,
    "pong_timeout_s": 2.0, "reconnects_per_second": 50.0, "reconnect_burst": 20,
    "cursor_commit_interval_s": 0.5, "grace_period_s": GRACE_S, "close_timeout_s": 1.0,
}
CLUSTER: dict[str, Any] = {
    "enabled": True, "slots": SLOTS, "session_timeout_s": SESSION_S,
    "heartbeat_interval_s": HEARTBEAT_S, "rebalance_timeout_s": 6.0, "lease_s": 1.5,
    "transaction_timeout_s": TXN_TIMEOUT_S, "takeover_read_timeout_s": 10.0,
    "revoke_commit_timeout_s": 1.0,
}
# what the instances' logs say about the broker loss (counted per survivor for the report)
NOTED = {"cluster.lease_expired", "slot.producer_reset", "slot.start_failed",
         "cursor.commit_failed", "slot.fenced", "slot.release_fenced", "cluster.group_error",
         "cluster.failed"}

T = TypeVar("T")


class Brokers:
    """The test's 3-broker cluster, every broker started from one thread of the test's own:
    ``PR_SET_PDEATHSIG`` ties a child to the *thread* that forked it, so that thread lives
    until the brokers are stopped (and dies with pytest, taking them along)."""

    def __init__(self, workdir: Path) -> None:
        self.kafka = KafkaCluster(workdir, size=3, tied=True, heap="384m",
                                  extra_settings=BROKER_SETTINGS)
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="brokers")

    async def call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(work, *args, **kwargs))

    async def stop(self) -> None:
        try:
            await self.call(self.kafka.stop)
        finally:
            self.pool.shutdown(wait=True)


async def _roles(bootstrap: str, cursors: str, group_id: str,
                 slots: set[int]) -> dict[str, Any]:
    """Which broker leads the cursor partition, coordinates the group and each slot's tid."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        topic = (await admin.describe_topics([cursors]))[0]
        partition = topic["partitions"][0]
        cluster = await admin.describe_cluster()
        return {
            "cursor_leader": partition["leader"], "cursor_isr": sorted(partition["isr"]),
            "controller": cluster.get("controller_id"),
            "group_coordinator": await admin.find_coordinator(group_id, 0),
            "txn_coordinators": {n: await admin.find_coordinator(f"{group_id}.slot-{n}", 1)
                                 for n in sorted(slots)},
        }
    finally:
        await admin.close()


async def _isr(bootstrap: str, topics: list[str]) -> dict[str, list[int]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        return {f"{t['topic']}/{p['partition']}": sorted(p["isr"])
                for t in await admin.describe_topics(topics) for p in t["partitions"]}
    finally:
        await admin.close()


def _choose(roles: dict[str, Any], candidates: dict[str, set[int]]) -> tuple[str, int]:
    """The instance to kill and the broker to kill with it: a broker that coordinates some of
    the instance's slot tids (the takeover's fence lands on it; failing that, the cursor
    partition's leader), preferably not the group's coordinator (losing that one expires every
    lease: the takeover then waits for the new coordinator instead of racing the broker loss),
    preferably the cursor partition's leader too (the takeover's read to the high watermark
    lands on it), then the most tids."""
    def score(pair: tuple[str, int]) -> tuple[bool, bool, bool, bool, int, str]:
        name, broker = pair
        coordinated = sum(1 for n in candidates[name] if roles["txn_coordinators"][n] == broker)
        leads = broker == roles["cursor_leader"]
        return (coordinated > 0, leads or coordinated > 0,
                broker != roles["group_coordinator"], leads, coordinated, name)

    return max(((name, broker) for name in candidates for broker in (1, 2, 3)), key=score)


def _first_commits(records: list[dict[str, Any]], since_wall: float,
                   owners: set[str]) -> dict[str, float]:
    """Per stream: the wall time of its first committed cursor at or after ``since_wall``
    written by one of ``owners``."""
    first: dict[str, float] = {}
    for record in records:
        if record["at"] >= since_wall and record["owner"] in owners:
            first.setdefault(record["stream"], record["at"])
    return first


def _logged_commits(instances: list[Instance], since_wall: float) -> dict[str, float]:
    """Per stream: when a ``cursor.committed`` line of one of ``instances`` first said so."""
    first: dict[str, float] = {}
    for instance in instances:
        for doc in events(instance.log_path, {"cursor.committed"}):
            at = ts(doc)
            if at >= since_wall and at < first.get(doc["stream"], float("inf")):
                first[doc["stream"]] = at
    return first


def _noted(instance: Instance, since_wall: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in events(instance.log_path, NOTED):
        if doc.get("ts") and ts(doc) >= since_wall:
            counts[doc["event"]] = counts.get(doc["event"], 0) + 1
    return counts


def _described(back: list[tuple[dict[str, Any], tuple[float, str | None]]],
               killed_wall: float) -> str:
    """Committed cursors that moved backwards, one line each: which stream, which owners."""
    lines = []
    for record, (previous, previous_owner) in back:
        when = "before" if record["at"] < killed_wall else "after"
        lines.append(f"{record['stream']}: {record['body']} by {record['owner']} at "
                     f"{record['at']:.3f} ({when} the kill) after position {previous:.3f} by "
                     f"{previous_owner}"
                     f"{' (same owner)' if previous_owner == record['owner'] else ''}")
    return "committed cursors moved backwards:\n" + "\n".join(lines)


async def _group_agrees(cluster: Cluster, group_id: str) -> None:
    """The group's assignment and the instances' logs name the same owner for every slot
    with streams (and no slot is assigned twice)."""
    view = await describe_once(cluster.bootstrap, group_id, cluster.topics["slots"])
    used = {slot_of(p.name, SLOTS) for p in PLANS}
    assigned = [n for m in view.members for n in m.slots]
    assert len(assigned) == len(set(assigned)), view
    for instance in cluster.live():
        member = view.member(instance.client_id() or "")
        assert member is not None, (instance.name, view)
        assert set(instance.slots()) == member.slots & used, (instance.name, member.slots)


async def test_one_broker_of_three_lost_during_a_takeover(
        tmp_path: Path, chaos_table: list[dict[str, Any]]) -> None:
    """kill -9 of an instance and SIGKILL of a broker its takeover needs, together: every
    stream owned and connected again within the bound, commits resume, the broker's return
    disturbs nobody; nothing lost, no cursor back, one owner each (the module's docstring)."""
    brokers = Brokers(tmp_path / "kafka")
    try:
        try:
            await brokers.call(brokers.kafka.start)
        except DevKafkaError as err:
            pytest.fail(f"local 3-broker Kafka unavailable: {err}", pytrace=False)
        prefix = f"t.brokers.{os.getpid()}.{int(time.time())}"
        work = tmp_path / "cluster"
        work.mkdir()
        async with running_cluster(brokers.kafka.bootstrap_servers, work, PLANS, prefix=prefix,
                                   connector=CONNECTOR, cluster=CLUSTER, grace_s=GRACE_S,
                                   kafka={"replication_factor": 3}) as cluster:
            report: dict[str, Any] = {}
            try:
                await _walk(cluster, brokers, f"{prefix}-connect", chaos_table, report)
            finally:  # the measurements, pass or fail (shown with -s, kept next to the logs)
                text = json.dumps(report, default=str)
                (work / "report.json").write_text(text)
                print(f"\ncluster brokers: {text}")
    finally:
        await brokers.stop()


async def _walk(cluster: Cluster, brokers: Brokers, group_id: str,
                chaos_table: list[dict[str, Any]], report: dict[str, Any]) -> None:
    # -- steady state -------------------------------------------------------------------------
    await cluster.settle(within_s=90, quiet_s=3.0)
    calm = time.monotonic()
    await asyncio.sleep(2.0)
    assert cluster.one_owner_each()
    assert cluster.spans(calm, time.monotonic()) == (0.0, 0.0)
    await _group_agrees(cluster, group_id)

    # -- kill -9 one instance and, at the same moment, a broker its takeover needs ------------
    candidates = {i.name: set(i.slots()) for i in cluster.live() if i.slots()}
    roles = await _roles(cluster.bootstrap, cluster.topics["cursors"], group_id,
                         set().union(*candidates.values()))
    name, target = _choose(roles, candidates)
    victim = cluster.instances[name]
    victim_slots = candidates[name]
    taken = victim.streams()
    victim_id = victim.client_id()
    survivors = [i for i in cluster.live() if i is not victim]
    survivor_ids = {i.client_id() for i in survivors} - {None}
    report.update(victim=victim.name, victim_slots=sorted(victim_slots), taken=sorted(taken),
                  roles=roles, killed_broker=target)
    emitted = cluster.emitted()
    killed_at, killed_wall = time.monotonic(), time.time()
    victim.send(signal.SIGKILL)
    broker_killed = asyncio.ensure_future(brokers.call(brokers.kafka.stop_node, target,
                                                       kill=True))
    await asyncio.to_thread(victim.popen.wait, 10)
    await broker_killed
    assert not brokers.kafka.nodes[target - 1].running

    # every stream owned again and connected, within the bound
    try:
        await until(cluster.one_owner_each, RECOVERY_BOUND_S - (time.monotonic() - killed_at),
                    "every stream owned and connected again")
    except AssertionError as err:
        raise AssertionError(f"{err}: owners {cluster.owners()}, takeover "
                             f"{cluster.takeover_s(taken, killed_at)}, logs "
                             f"{ {i.name: _noted(i, killed_wall) for i in survivors} }") from None
    recovered_s, recovered_wall = round(time.monotonic() - killed_at, 2), time.time()
    await cluster.settle(within_s=30)
    settled_at = time.monotonic()
    takeover = cluster.takeover_s(taken, killed_at)
    assert all(v is not None and v <= RECOVERY_BOUND_S for v in takeover.values()), takeover

    # cursor commits resume: for every stream (the taken-over ones included) a committed
    # cursor, read_committed, by a survivor, begun after the takeover (after the broker loss)
    commits: dict[str, float] = {}
    deadline = killed_at + RECOVERY_BOUND_S + TXN_TIMEOUT_S
    while True:
        records = await cursor_records(cluster)
        commits = _first_commits(records, recovered_wall, survivor_ids)
        if all(p.name in commits for p in PLANS):
            break
        assert time.monotonic() < deadline, (
            f"no committed cursor after the takeover for "
            f"{sorted(p.name for p in PLANS if p.name not in commits)}; logs: "
            f"{ {i.name: _noted(i, killed_wall) for i in survivors} }")
        await asyncio.sleep(0.5)
    first = _first_commits(records, killed_wall, survivor_ids)
    report.update(
        recovered_s=recovered_s, takeover_s=takeover,
        # per stream: the first committed cursor after the kill, by its updated_at (when its
        # transaction began) and by the cursor.committed log line (when it completed)
        commit_begun_s={n: round(at - killed_wall, 2) for n, at in sorted(first.items())},
        commit_done_s={n: round(at - killed_wall, 2)
                       for n, at in sorted(_logged_commits(survivors, killed_wall).items())},
        noted={i.name: _noted(i, killed_wall) for i in survivors})
    assert not any(r["owner"] == victim_id and r["at"] >= killed_wall
                   for r in await cursor_records(cluster)), "a cursor of the killed instance"
    await row(cluster, chaos_table, "3 brokers, one lost during a takeover", emitted,
              (killed_at, settled_at), recovered_s)
    await _group_agrees(cluster, group_id)

    # -- the broker comes back: the cluster stays healthy ------------------------------------
    restart_at, restart_wall = time.monotonic(), time.time()
    await brokers.call(brokers.kafka.start_node, target)
    back_at, back_wall = time.monotonic(), time.time()
    report["broker_restart_s"] = round(back_at - restart_at, 2)
    await asyncio.sleep(HEALTHY_WINDOW_S)
    assert cluster.one_owner_each(), cluster.owners()
    gap, double = cluster.spans(restart_at, time.monotonic())
    report["restart_spans"] = (gap, double)
    assert gap == 0.0, f"a stream lost its connection while the broker came back ({gap} s)"
    again = _first_commits(await cursor_records(cluster), back_wall, survivor_ids)
    assert all(p.name in again for p in PLANS), sorted(p.name for p in PLANS
                                                        if p.name not in again)
    watched = [cluster.topics["cursors"], cluster.topics["raw"], cluster.topics["slots"]]
    await until_async(lambda: _isr(cluster.bootstrap, watched),
                      lambda isr: all(len(v) == 3 for v in isr.values()), 30,
                      "every replica back in sync")
    await _group_agrees(cluster, group_id)
    report["noted_after_restart"] = {i.name: _noted(i, restart_wall) for i in survivors}

    # -- the verdict: nothing lost, cursors never back, one owner each -------------------------
    cluster.sim.stop_generating()
    await asyncio.sleep(2.0)
    ledger = cluster.emitted()
    await until(lambda: cluster.lost_so_far(ledger) == 0, 60, "raw holding every event")
    verdict = compare(ledger, await read_topic(cluster.bootstrap, cluster.topics["raw"]))
    report["verdict"] = verdict.to_json()
    assert verdict.missing == 0 and verdict.altered == 0, verdict.to_json()
    records = await cursor_records(cluster)
    assert {r["stream"] for r in records} == {p.name for p in PLANS}
    back = steps_back(cluster, records)
    assert not back, _described(back, killed_wall)
    assert cluster.one_owner_each(), cluster.owners()
    await _group_agrees(cluster, group_id)


async def until_async(probe: Callable[[], Any], ok: Callable[[Any], bool], within_s: float,
                      what: str) -> None:
    deadline = time.monotonic() + within_s
    last = None
    while True:
        try:
            last = await probe()
            if ok(last):
                return
        except Exception as err:  # a broker still starting: ask again
            last = err
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}: {last}")
        await asyncio.sleep(0.5)
