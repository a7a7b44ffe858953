"""Kafka failing under a streaming connector: a broker of its own, killed (SIGKILL) and
restarted mid-stream, while the simulator keeps emitting; and the same broker frozen (SIGSTOP:
a blackhole, connections open and nothing answered) under a cluster-mode connector, which must
let go of its streams within its membership lease (docs/cluster.md, design test 9).

The broker here is a dedicated single-node ``KafkaCluster`` (the shared one stays untouched for
the other tests); it is stopped by pid when the module ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from support.connector import (
    FAST_CONNECTOR,
    SECRET,
    make_config,
    read_all,
    running,
    sim_stream,
    until,
)

from ccstream import records
from ccstream.config import Config, parse
from ccstream.timefmt import parse_rfc3339 as parse_timestamp
from devtools import devkafka
from simulator import ClientSpec, SimSettings, Simulator

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.KafkaCluster]:
    """A single-node broker this module may kill and restart."""
    cluster = devkafka.KafkaCluster(tmp_path_factory.mktemp("outage-kafka"), size=1, tied=True)
    try:
        cluster.start()
    except devkafka.DevKafkaError as err:
        pytest.fail(f"local Kafka broker unavailable: {err}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


def logged(caplog: pytest.LogCaptureFixture, event: str) -> int:
    """How many times the connector (not the simulator) logged ``event``."""
    return sum(1 for r in caplog.records
               if r.name == "ccstream.connector" and r.getMessage() == event)


async def test_broker_killed_and_restarted_loses_nothing_and_never_commits_ahead(
        own_kafka: devkafka.KafkaCluster, topic_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """With the only broker killed mid-stream, sends fail and the streams reconnect; once it is
    back everything emitted is in the raw topic, and no cursor was ever written before every
    event up to it had been acknowledged."""
    caplog.set_level(logging.INFO)
    bootstrap = own_kafka.bootstrap_servers
    clients = (ClientSpec("acme", SECRET, platforms=("genesys",)),
               ClientSpec("other", SECRET, platforms=("nice",)))
    settings = SimSettings(clients=clients, seed=21, rate=30.0, duplicate_rate=0.0)
    async with Simulator(settings) as sim:
        config = make_config(bootstrap, topic_prefix, [
            sim_stream(sim, "out-g", "genesys", "acme"), sim_stream(sim, "out-n", "nice", "other")],
            since_lateness_s=1.0)
        # a small producer buffer (one 16 KiB batch per partition) fills within a second of
        # the outage, and a send then fails after request_timeout_s
        config = config.model_copy(update={"kafka": config.kafka.model_copy(
            update={"request_timeout_s": 3.0, "max_batch_bytes": 16_384})})
        async with running(config):
            await until(lambda: _cursors(bootstrap, config, 2), timeout=60)
            await asyncio.to_thread(own_kafka.stop_node, 1, kill=True)
            try:
                await until(lambda: logged(caplog, "kafka.waiting") >= 2, timeout=60)
                # the platform keeps generating while the streams wait for Kafka
                logs = [sim.streams["genesys", "acme"].log, sim.streams["nice", "other"].log]
                made = [log.next_seq for log in logs]
                await until(lambda: all(log.next_seq > n + 30 for log, n in zip(logs, made,
                                                                                 strict=True)))
            finally:
                await asyncio.to_thread(own_kafka.start_node, 1)
            await until(lambda: _everything(bootstrap, config, sim), timeout=90)
        assert logged(caplog, "kafka.send_failed") >= 2
        assert logged(caplog, "kafka.recovered") >= 2
        # while Kafka was down the streams waited instead of reconnecting again and again
        assert logged(caplog, "ws.connected") <= 2 * 3
    raw = await read_all(bootstrap, config.topics.raw)
    first_stored: dict[str, int] = {}
    for record in raw:
        key = records.header(record.headers, records.H_DEDUP_KEY).decode()
        first_stored[key] = min(first_stored.get(key, record.timestamp), record.timestamp)
    cursors = await read_all(bootstrap, config.topics.cursors)
    checked = 0
    for cursor in cursors:
        covered = _covered(cursor, raw, sim)
        for key in covered:
            # the cursor was produced after the event was acknowledged, so after it was sent
            assert first_stored[key] <= cursor.timestamp, (cursor.value, key)
        checked += len(covered)
    assert checked > 0


async def _cursors(bootstrap: str, config: Config, streams: int) -> bool:
    return len({r.key for r in await read_all(bootstrap, config.topics.cursors)}) >= streams


async def _everything(bootstrap: str, config: Config, sim: Simulator) -> bool:
    emitted = sim.ledger.keys("genesys", "acme") | sim.ledger.keys("nice", "other")
    got = {records.header(r.headers, records.H_DEDUP_KEY).decode()
           for r in await read_all(bootstrap, config.topics.raw)}
    return bool(emitted) and emitted <= got


def _covered(cursor: Any, raw: list[Any], sim: Simulator) -> list[str]:
    """The dedup keys a cursor record claims are acknowledged: NICE, every event up to the
    cursor's own (in emission order); Genesys, every event older than ``since``."""
    doc = orjson.loads(cursor.value)
    if "cursor" in doc:
        order = sim.ledger.stream("nice", "other").order
        [key] = {records.header(r.headers, records.H_DEDUP_KEY).decode() for r in raw
                 if records.header(r.headers, records.H_CURSOR) == doc["cursor"].encode()}
        return order[:order.index(key) + 1]
    since = parse_timestamp(doc["since"])
    assert since is not None
    order = sim.ledger.stream("genesys", "acme").order
    return [k for k in order if (parse_timestamp(k.split("|")[2]) or 0.0) < since]


LEASE_S = 1.5
SESSION_S = 2.0


async def test_a_frozen_broker_makes_a_cluster_member_drop_its_streams_within_its_lease(
        own_kafka: devkafka.KafkaCluster, topic_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """The only broker stops answering (SIGSTOP) under a cluster-mode instance: its membership
    lease is not renewed, so it closes every stream within the lease (plus one heartbeat and a
    close) and opens none while Kafka stays silent, since another instance could have taken its
    slots; once the broker answers again it rejoins, takes its slots back and loses nothing."""
    caplog.set_level(logging.INFO)
    bootstrap = own_kafka.bootstrap_servers
    clients = (ClientSpec("acme", SECRET, platforms=("genesys",)),
               ClientSpec("other", SECRET, platforms=("nice",)))
    settings = SimSettings(clients=clients, seed=22, rate=30.0, duplicate_rate=0.0)
    async with Simulator(settings) as sim:
        config = parse({
            "kafka": {"bootstrap_servers": bootstrap, "partitions": 2, "linger_ms": 2,
                      "request_timeout_s": 3.0},
            "topics": {"raw": f"{topic_prefix}.raw", "clean": f"{topic_prefix}.clean",
                       "cursors": f"{topic_prefix}.cursors", "dlq": f"{topic_prefix}.dlq",
                       "slots": f"{topic_prefix}.slots"},
            "connector": {**FAST_CONNECTOR, "since_lateness_s": 1.0},
            "cluster": {"enabled": True, "slots": 4, "group_id": f"{topic_prefix}-connect",
                        "session_timeout_s": SESSION_S, "heartbeat_interval_s": 0.4,
                        "lease_s": LEASE_S, "rebalance_timeout_s": 5.0,
                        "transaction_timeout_s": 5.0, "takeover_read_timeout_s": 10.0,
                        "revoke_commit_timeout_s": 1.0},
            "streams": [sim_stream(sim, "frz-g", "genesys", "acme"),
                        sim_stream(sim, "frz-n", "nice", "other")],
        }, environ={})
        names = ("genesys/acme", "nice/other")
        loop = asyncio.get_running_loop()
        process = own_kafka.nodes[0].process
        assert process is not None
        async with running(config) as (runner, task):
            assert not task.done(), task.result()
            await until(lambda: len(runner.sources) == 2
                        and all(sim.owners.open_now(n) == 1 for n in names), timeout=60)
            await until(lambda: _cursors(bootstrap, config, 2), timeout=60)
            frozen_at = loop.time()
            os.kill(process.pid, signal.SIGSTOP)
            try:
                bound = LEASE_S + 0.4 + config.connector.close_timeout_s + 0.5
                await until(lambda: all(sim.owners.open_now(n) == 0 for n in names),
                            timeout=bound + 5.0)
                dropped = loop.time() - frozen_at
                await asyncio.sleep(3 * SESSION_S - dropped)
                thawed_at = loop.time()
                reopened = [e for e in sim.owners.events
                            if e.delta > 0 and frozen_at <= e.t <= thawed_at]
            finally:
                os.kill(process.pid, signal.SIGCONT)
            await until(lambda: all(sim.owners.open_now(n) == 1 for n in names), timeout=60)
            back = loop.time() - thawed_at
            await until(lambda: _everything(bootstrap, config, sim), timeout=90)
        print(f"\nfrozen broker: streams dropped {dropped:.2f} s after SIGSTOP (lease "
              f"{LEASE_S} s), back {back:.2f} s after SIGCONT")
        assert dropped <= bound, (dropped, bound)
        assert not reopened, reopened
        assert any(r.name == "ccstream.cluster" and r.getMessage() == "cluster.lease_expired"
                   for r in caplog.records)
