"""Kafka failing under a streaming connector: a broker of its own, killed (SIGKILL) and
restarted mid-stream, while the simulator keeps emitting.

The broker here is a dedicated single-node ``KafkaCluster`` (the shared one stays untouched for
the other tests); it is stopped by pid when the module ends, whatever happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from support.connector import SECRET, make_config, read_all, running, sim_stream, until

from ccstream import records
from ccstream.config import Config
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
