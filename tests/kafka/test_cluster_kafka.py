"""Cluster mode's Kafka side against the real broker: transactional cursors and fencing, the
cursor tail read_committed to the high watermark, the cursor topic's compaction settings, the
group as ``ccstream owners`` sees it, the start-up refusal of a repartitioned slot topic, and two
instances in one process handing streams over. (Also the simulator's single-session mode, on
loopback: the process test relies on it.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced
from support.connector import FAST_CONNECTOR, SECRET, sim_stream, until

from ccstream.commands.owners import owners
from ccstream.config import Config, parse
from ccstream.topics import contract_topics, ensure_topics, topic_config
from connectors.cluster.group import describe_once
from connectors.kafka import cursor_store
from connectors.kafka.cursor_store import CursorTail
from connectors.policy.slots import slot_of
from connectors.runner import Runner
from simulator import ClientSpec, SimSettings, Simulator

pytestmark = pytest.mark.kafka

FAST_CLUSTER: dict[str, Any] = {
    "enabled": True, "slots": 4, "session_timeout_s": 2.0, "heartbeat_interval_s": 0.4,
    "rebalance_timeout_s": 5.0, "transaction_timeout_s": 5.0, "takeover_read_timeout_s": 10.0,
    "revoke_commit_timeout_s": 1.0,
}


def cluster_config(bootstrap: str, prefix: str, streams: list[dict[str, Any]],
                   **cluster: Any) -> Config:
    return parse({
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 2, "linger_ms": 2},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq",
                   "slots": f"{prefix}.slots"},
        "connector": {**FAST_CONNECTOR, "cursor_commit_interval_s": 0.3},
        "cluster": {**FAST_CLUSTER, "group_id": f"{prefix}-connect", **cluster},
        "streams": streams,
    }, environ={})


def txn_producer(bootstrap: str, tid: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=tid,
                            transaction_timeout_ms=5000, acks="all", enable_idempotence=True)


async def test_a_second_producer_of_one_slot_fences_the_first(bootstrap: str,
                                                            topic_prefix: str) -> None:
    """Starting the slot's producer elsewhere makes the first one's next commit raise
    ProducerFenced, and nothing it sent after that is read back read_committed."""
    config = cluster_config(bootstrap, topic_prefix, [])
    await ensure_topics(bootstrap, contract_topics(config))
    topic, tid = config.topics.cursors, f"{topic_prefix}.slot-3"
    first = txn_producer(bootstrap, tid)
    await first.start()
    async with first.transaction():
        await first.send(topic, key=b"s", value=cursor_store.encode("nice", {"cursor": "A"}, 1.0,
                                                                   "first"))
    second = txn_producer(bootstrap, tid)
    await second.start()  # InitProducerId: the epoch moves on
    try:
        await first.begin_transaction()
        await first.send(topic, key=b"s", value=cursor_store.encode("nice", {"cursor": "Z"},
                                                                   2.0, "zombie"))
        with pytest.raises(ProducerFenced):
            await asyncio.wait_for(first.commit_transaction(), 10)
        async with second.transaction():
            await second.send(topic, key=b"s", value=cursor_store.encode(
                "nice", {"cursor": "B"}, 3.0, "second"))
    finally:
        await second.stop()
        await first.stop()
    stored = await cursor_store.load(bootstrap, topic)
    assert stored["s"].body == {"cursor": "B"}
    assert stored["s"].owner == "second"


async def test_the_tail_reads_to_the_high_watermark_past_an_open_transaction(
        bootstrap: str, topic_prefix: str) -> None:
    """A cursor committed after another slot's transaction began is read once that transaction
    ends (the last stable offset alone would hide it); an aborted cursor is never read."""
    config = cluster_config(bootstrap, topic_prefix, [])
    await ensure_topics(bootstrap, contract_topics(config))
    topic = config.topics.cursors
    slow, fast = (txn_producer(bootstrap, f"{topic_prefix}.slot-{n}") for n in (1, 2))
    await slow.start()
    await fast.start()
    tail = CursorTail(bootstrap, topic)
    await tail.start()
    try:
        await slow.begin_transaction()
        await slow.send(topic, key=b"a", value=cursor_store.encode("nice", {"cursor": "X"}, 1.0))
        await asyncio.sleep(0.2)
        async with fast.transaction():
            await fast.send(topic, key=b"b", value=cursor_store.encode("nice", {"cursor": "Y"},
                                                                      2.0))
        reading = asyncio.ensure_future(tail.read_to_hw(15.0))
        await asyncio.sleep(0.8)
        assert not reading.done()  # held below the open transaction
        await slow.abort_transaction()
        cursors, hw = await asyncio.wait_for(reading, 10)
        assert cursors["b"].body == {"cursor": "Y"}
        assert "a" not in cursors
        assert sum(hw.values()) >= 2
    finally:
        await tail.stop()
        await slow.stop()
        await fast.stop()
    assert set(await cursor_store.load(bootstrap, topic)) == {"b"}


async def test_the_cursor_topic_is_created_to_be_compacted_and_the_slot_topic_sized(
        bootstrap: str, topic_prefix: str) -> None:
    """segment.ms and max.compaction.lag.ms let compaction run; the slot topic has
    cluster.slots partitions and only exists in cluster mode."""
    config = cluster_config(bootstrap, topic_prefix, [], slots=5)
    created = await ensure_topics(bootstrap, contract_topics(config))
    assert config.topics.slots in created
    cursors = await topic_config(bootstrap, config.topics.cursors)
    assert cursors["cleanup.policy"] == "compact"
    assert cursors["segment.ms"] == "3600000"
    assert cursors["max.compaction.lag.ms"] == "3600000"
    from ccstream.topics import partition_count

    assert await partition_count(bootstrap, config.topics.slots) == 5
    plain = parse({"topics": {"slots": "x"}}, environ={})
    assert "x" not in {s.name for s in contract_topics(plain)}



async def test_cluster_fence_aborts_an_old_slot_ids_transaction_and_refuses_a_live_group(
        bootstrap: str, topic_prefix: str) -> None:
    """``ccstream cluster fence``: with no member in the group, every slot's id is fenced, so a
    forgotten holder's open cursor transaction is aborted (never read read_committed) and its
    commit fails; with a member in the group it refuses unless forced; without a slot topic
    it needs --slots."""
    from aiokafka import AIOKafkaConsumer

    from ccstream.commands.cluster import fence

    config = cluster_config(bootstrap, topic_prefix, [], slots=4)
    lines, status = await fence(config, None)
    assert status == 1 and "--slots" in lines[0]
    await ensure_topics(bootstrap, contract_topics(config))
    topic = config.topics.cursors
    zombie = txn_producer(bootstrap, f"{config.cluster.group_id}.slot-2")
    await zombie.start()
    try:
        await zombie.begin_transaction()
        await zombie.send(topic, key=b"s", value=cursor_store.encode(
            "nice", {"cursor": "Z"}, 1.0, "zombie"))
        lines, status = await fence(config, None)
        assert status == 0, lines
        assert lines[-1].endswith("4 of 4 slots fenced")
        assert f"{config.cluster.group_id}.slot-2\tfenced" in lines[2]
        with pytest.raises(ProducerFenced):
            await asyncio.wait_for(zombie.commit_transaction(), 10)
    finally:
        await zombie.stop()
    assert "s" not in await cursor_store.load(bootstrap, topic)
    member = AIOKafkaConsumer(config.topics.slots, bootstrap_servers=bootstrap,
                              group_id=config.cluster.group_id, client_id="still-running",
                              session_timeout_ms=6000, heartbeat_interval_ms=500)
    await member.start()
    try:
        async def joined() -> bool:
            await member.getmany(timeout_ms=100)
            return bool(member.assignment())

        await until(joined, 30)
        lines, status = await fence(config, 2)
        assert status == 1 and "still-running" in lines[0] and "--force" in lines[0]
        lines, status = await fence(config, 2, force=True)
        assert status == 0 and lines[-1].endswith("2 of 2 slots fenced")
    finally:
        await member.stop()


# -- two instances in this process --------------------------------------------------------------
def _streams(sim: Simulator, names: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [sim_stream(sim, name, platform, name) for name, platform in names]


async def _owned(runner: Runner) -> set[str]:
    return {s.name for s in runner.sources}


async def test_two_instances_share_the_streams_and_hand_them_over(
        bootstrap: str, topic_prefix: str) -> None:
    """Two cluster-mode runners split the streams, each stream on exactly one; `ccstream
    owners` shows the split; when one stops (SIGTERM path) the other takes its streams and
    resumes from the cursors it released."""
    names = [(f"g{i}", "genesys") for i in range(3)] + [(f"n{i}", "nice") for i in range(3)]
    clients = tuple(ClientSpec(n, SECRET, platforms=(p,)) for n, p in names)  # type: ignore[arg-type]
    async with Simulator(SimSettings(clients=clients, seed=5, rate=10.0,
                                     single_session=("genesys",))) as sim:
        config = cluster_config(bootstrap, topic_prefix, _streams(sim, names))
        a, b = Runner(config), Runner(config)
        task_a = asyncio.ensure_future(a.run())
        await until(lambda: len(a.sources) == len(names) or task_a.done(), timeout=60)
        assert not task_a.done(), task_a.result() if task_a.done() else None
        task_b = asyncio.ensure_future(b.run())
        try:
            await until(lambda: a.sources and b.sources
                        and len(a.sources) + len(b.sources) == len(names), timeout=60)
            await until(lambda: all(sim.owners.open_now(f"{p}/{n}") == 1 for n, p in names),
                        timeout=30)
            split = (await _owned(a), await _owned(b))
            assert not split[0] & split[1]
            lines = await owners(config)
            assert lines is not None
            slot_lines = [line for line in lines if line.startswith("slot ")]
            assert len(slot_lines) == config.cluster.slots
            for line in slot_lines:
                _, number = line.split("\t")[0].split()
                streams = line.split("\t")[2]
                expected = [n for n, _ in names if slot_of(n, config.cluster.slots) == int(number)]
                assert streams == (",".join(expected) or "-")
            # B leaves: A takes everything, from the cursors B released
            b.request_stop()
            outcome = await asyncio.wait_for(task_b, 15)
            assert outcome.code == 0, outcome.message
            released = await cursor_store.load(bootstrap, config.topics.cursors)
            await until(lambda: len(a.sources) == len(names), timeout=20)
            await until(lambda: all(sim.owners.open_now(f"{p}/{n}") == 1 for n, p in names),
                        timeout=20)
            for name in split[1]:
                assert released[name].owner is not None
        finally:
            b.request_stop()
            a.request_stop()
            results = await asyncio.wait_for(asyncio.gather(task_a, task_b,
                                                            return_exceptions=True), 30)
        assert results[0].code == 0, results[0]
        view = await describe_once(bootstrap, config.cluster.group_id, config.topics.slots)
        assert not view.members


async def test_a_static_member_restarted_within_the_session_gets_its_own_slots_back(
        bootstrap: str, topic_prefix: str) -> None:
    """``instance_id`` (static membership, design test 6): B stops (a static member sends no
    LeaveGroup) and a new process with B's instance id starts within the session timeout: it
    gets B's slots, hence B's streams, back, and A's streams are never handed over or
    reconnected meanwhile."""
    names = [(f"g{i}", "genesys") for i in range(3)] + [(f"n{i}", "nice") for i in range(3)]
    clients = tuple(ClientSpec(n, SECRET, platforms=(p,)) for n, p in names)  # type: ignore[arg-type]
    # a session long enough for a busy machine to restart B in it; the lease stays shorter
    # than session - heartbeat
    timing = {"session_timeout_s": 6.0, "heartbeat_interval_s": 0.5, "lease_s": 4.0}
    async with Simulator(SimSettings(clients=clients, seed=6, rate=10.0)) as sim:
        streams = _streams(sim, names)
        configs = {i: cluster_config(bootstrap, topic_prefix, streams, instance_id=f"static-{i}",
                                     **timing) for i in "ab"}
        a, b = Runner(configs["a"]), Runner(configs["b"])
        tasks = [asyncio.ensure_future(a.run()), asyncio.ensure_future(b.run())]
        again: Runner | None = None
        try:
            await until(lambda: a.sources and b.sources
                        and len(a.sources) + len(b.sources) == len(names), timeout=60)
            await until(lambda: all(sim.owners.open_now(f"{p}/{n}") == 1 for n, p in names),
                        timeout=30)
            kept, moved = await _owned(a), await _owned(b)
            b.request_stop()
            assert (await asyncio.wait_for(tasks[1], 15)).code == 0
            stopped_at = asyncio.get_running_loop().time()
            again = Runner(configs["b"])
            tasks.append(asyncio.ensure_future(again.run()))
            await until(lambda: len(again.sources) == len(moved) or tasks[2].done(), timeout=30)
            assert await _owned(again) == moved
            assert await _owned(a) == kept
            await until(lambda: all(sim.owners.open_now(f"{p}/{n}") == 1 for n, p in names),
                        timeout=30)
            assert all(sim.owners.opened_since(f"{p}/{n}", stopped_at) == 0
                       for n, p in names if n in kept)
            # B's streams were opened once since, by the restarted B: A never took them over
            assert all(sim.owners.opened_since(f"{p}/{n}", stopped_at) == 1
                       for n, p in names if n in moved)
        finally:
            for runner in (a, b, again):
                if runner is not None:
                    runner.request_stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def test_a_fenced_slot_stops_commits_nothing_and_is_taken_again_while_assigned(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """Another producer starting the slot's transactional id (what a new owner does) makes the
    running slot's next transaction fail fenced: its streams stop without a commit; the slot
    is still ours in the group, so after a heartbeat or two it fences back and runs again."""
    caplog.set_level(logging.INFO)
    names = [("g0", "genesys")]
    clients = tuple(ClientSpec(n, SECRET, platforms=(p,)) for n, p in names)  # type: ignore[arg-type]
    async with Simulator(SimSettings(clients=clients, seed=5, rate=20.0)) as sim:
        config = cluster_config(bootstrap, topic_prefix, _streams(sim, names))
        runner = Runner(config)
        task = asyncio.ensure_future(runner.run())
        try:
            await until(lambda: runner.sources or task.done(), timeout=60)
            first = runner.sources[0]
            await until(lambda: any(r.getMessage() == "cursor.committed"
                                    for r in caplog.records), timeout=20)
            slot = slot_of("g0", config.cluster.slots)
            intruder = txn_producer(bootstrap, f"{config.cluster.group_id}.slot-{slot}")
            await intruder.start()
            await intruder.stop()
            fenced_at = len(caplog.records)
            await until(lambda: any(r.getMessage() == "slot.fenced"
                                    for r in caplog.records[fenced_at:]), timeout=20)
            await until(lambda: runner.sources and runner.sources[0] is not first, timeout=20)
            later = [r.getMessage() for r in caplog.records[fenced_at:]]
            stop = later.index("slot.fenced")
            assert "cursor.committed" not in later[:stop]
            assert later.index("slot.running") > stop
            await until(lambda: any(r.getMessage() == "cursor.committed"
                                    for r in caplog.records[fenced_at + stop:]), timeout=20)
        finally:
            runner.request_stop()
            outcome = await asyncio.wait_for(task, 30)
        assert outcome.code == 0, outcome.message


async def test_a_slot_count_changed_under_a_running_group_is_refused(
        bootstrap: str, topic_prefix: str) -> None:
    """An instance whose slot topic has another partition count than the running group's
    members map streams with exits 1 with one line naming topics.slots; the running member
    notices at its next metadata refresh and stops too, committing nothing."""
    names = [("g0", "genesys")]
    clients = tuple(ClientSpec(n, SECRET, platforms=(p,)) for n, p in names)  # type: ignore[arg-type]
    async with Simulator(SimSettings(clients=clients, seed=5, rate=5.0)) as sim:
        config = cluster_config(bootstrap, topic_prefix, _streams(sim, names))
        first = Runner(config)
        task = asyncio.ensure_future(first.run())
        try:
            await until(lambda: first.sources or task.done(), timeout=60)
            from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.create_partitions({config.topics.slots: NewPartitions(6)})
            finally:
                await admin.close()
            started = time.monotonic()
            outcome = await asyncio.wait_for(Runner(config).run(), 30)
            assert outcome.code == 1
            assert outcome.message.startswith("topics.slots:"), outcome.message
            assert "\n" not in outcome.message
            assert time.monotonic() - started < 30
            running = await asyncio.wait_for(task, 40)
            assert running.code == 1
            assert running.message.startswith("topics.slots:"), running.message
        finally:
            first.request_stop()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)


# -- the simulator's single-session mode (loopback; belongs with the component tests) -----------
async def test_single_session_mode_closes_the_older_connection(sim_token: Any) -> None:
    """On a single-session platform a second connection of a stream closes the first with the
    replaced code; the owners timeline shows one connection at a time; other platforms keep
    both."""
    import aiohttp

    settings = SimSettings(clients=(ClientSpec("acme", SECRET),), seed=1, rate=5.0,
                           single_session=("genesys",))
    async with Simulator(settings) as sim, aiohttp.ClientSession() as http:
        token = await sim_token(sim, "acme", SECRET)
        for platform, replaced in (("genesys", True), ("nice", False)):
            url = f"{sim.stream_url(platform)}?access_token={token}"
            first = await http.ws_connect(url)
            second = await http.ws_connect(url)
            name = f"{platform}/acme"
            if replaced:
                message = await asyncio.wait_for(_until_close(first), 5)
                assert message == (sim.settings.replaced_code, "replaced")
                await sim.wait_for(lambda s, n=name: s.owners.open_now(n) == 1, timeout=5)
            else:
                await asyncio.sleep(0.3)
                assert sim.owners.open_now(name) == 2
                await first.close()
            await second.close()
        assert sim.stats["acme"].replaced == 1
        opened = sum(1 for e in sim.owners.events if e.delta > 0)
        assert opened == 4
        await sim.wait_for(lambda s: sum(1 for e in s.owners.events if e.delta < 0) == 4)


async def _until_close(ws: Any) -> tuple[int | None, str]:
    import aiohttp

    while True:
        message = await ws.receive()
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                            aiohttp.WSMsgType.CLOSING):
            return ws.close_code, str(message.extra or "")
