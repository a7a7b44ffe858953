"""The local Apache Kafka broker: real produce/consume, topic creation as the contract says."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ccstream.config import Config, KafkaSettings, TopicNames
from ccstream.topics import contract_topics, ensure_topics, partition_count, topic_config
from devtools import devkafka


async def test_produce_and_consume_round_trip(bootstrap: str, topic_prefix: str) -> None:
    """Records sent with an idempotent acks=all producer come back with key, value and headers."""
    topic = f"{topic_prefix}.rt"
    config = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap),
                    topics=TopicNames(raw=topic, clean=f"{topic}.c", cursors=f"{topic}.cur",
                                      dlq=f"{topic}.dlq"))
    await ensure_topics(bootstrap, contract_topics(config))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(50):
            await producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                                headers=[("ccstream-stream", b"s1")])
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    seen: dict[bytes, bytes] = {}
    try:
        while len(seen) < 50:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for records in batch.values():
                for record in records:
                    assert record.headers == (("ccstream-stream", b"s1"),)
                    seen[record.key] = record.value
    finally:
        await consumer.stop()
    assert seen == {f"k{i}".encode(): f"v{i}".encode() for i in range(50)}


async def test_contract_topics_created_with_compacted_cursor_topic(
    bootstrap: str, topic_prefix: str
) -> None:
    """Missing topics are created; the cursor topic is compacted; existing topics are kept."""
    names = TopicNames(raw=f"{topic_prefix}.raw", clean=f"{topic_prefix}.clean",
                       cursors=f"{topic_prefix}.cursors", dlq=f"{topic_prefix}.dlq")
    config = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=4), topics=names)
    created = await ensure_topics(bootstrap, contract_topics(config))
    assert sorted(created) == sorted([names.raw, names.clean, names.cursors, names.dlq])
    assert (await topic_config(bootstrap, names.cursors))["cleanup.policy"] == "compact"
    assert (await topic_config(bootstrap, names.raw))["cleanup.policy"] == "delete"
    assert await partition_count(bootstrap, names.raw) == 4
    bigger = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=8), topics=names)
    assert await ensure_topics(bootstrap, contract_topics(bigger)) == []
    assert await partition_count(bootstrap, names.raw) == 4


def test_tied_broker_dies_with_its_parent(tmp_path: Path) -> None:
    """A broker started by a process that is killed with SIGKILL does not outlive it."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from devtools import devkafka\n"
        f"c = devkafka.KafkaCluster(Path({str(tmp_path)!r}), tied=True).start()\n"
        "print(c.nodes[0].process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        assert devkafka.is_alive(broker_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 20
    while devkafka.is_alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = devkafka.is_alive(broker_pid)
    if alive:  # never leave it behind, even when the test fails
        os.kill(broker_pid, signal.SIGKILL)
    assert not alive


@pytest.mark.slow
def test_three_broker_cluster_survives_losing_one(tmp_path: Path) -> None:
    """A 3-broker cluster (RF 3, min ISR 2) keeps accepting acks=all writes with one broker down."""
    with devkafka.KafkaCluster(tmp_path, size=3, heap="256m") as cluster:
        bootstrap = cluster.bootstrap_servers

        async def write(topic: str, n: int) -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                        enable_idempotence=True)
            await producer.start()
            try:
                for i in range(n):
                    await producer.send_and_wait(topic, key=b"k", value=str(i).encode())
            finally:
                await producer.stop()

        config = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, replication_factor=3))
        asyncio.run(ensure_topics(bootstrap, contract_topics(config)))
        assert asyncio.run(topic_config(bootstrap, config.topics.raw))["min.insync.replicas"] == "2"
        asyncio.run(write(config.topics.raw, 5))
        cluster.stop_node(3, kill=True)
        assert not cluster.nodes[2].running
        asyncio.run(write(config.topics.raw, 5))
        cluster.start_node(3)
        assert all(node.running for node in cluster.nodes)
