"""The judged position (the changelog's ``O`` ops) against the real broker.

Faust can commit input offsets past records that never reached the agent (records dropped
around a rebalance). These tests build that state on purpose, rather than waiting for the race:
the changelog says "judged up to N" while the group's committed offset is further on. They also
check that offsets without records (a transactional producer's commit markers) are not taken
for such a hole.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from support.dedup import (
    T0,
    dedup_keys,
    expected_keys,
    frame,
    produce,
    read_all,
    workers,
    write_config,
)

from ccstream.config import Config
from ccstream.topics import TopicSpec, ensure_topics
from pipeline.bloom import policy_for
from pipeline.dedup import keys
from pipeline.dedup.app import changelog_retention_s
from pipeline.dedup.state import PartitionDedup
from pipeline.dedup.table import changelog_topic_name

pytestmark = pytest.mark.kafka


async def _topics(config: Config) -> None:
    retention = str(int(changelog_retention_s(config) * 1000))
    await ensure_topics(config.kafka.bootstrap_servers, [
        TopicSpec(config.topics.raw, 1, 1),
        TopicSpec(changelog_topic_name(config.dedup.app_id), 1, 1,
                  {"cleanup.policy": "delete", "retention.ms": retention}),
    ])


async def _judged_changelog(config: Config, judged: list[tuple[int, float]]) -> None:
    """Write the ops a worker would have written after judging ``judged`` at offsets 0..n-1."""
    d = config.dedup
    state = PartitionDedup(policy_for(d.window_s, d.generations, d.expected_events_per_window,
                                      d.false_positive_rate, d.memory_factor))
    for offset, (key, ts) in enumerate(judged):
        _, value, headers = frame(key)
        dedup_key = keys.key_of(headers, value)
        assert isinstance(dedup_key, bytes)
        state.decide(dedup_key, ts)
        state.judged(offset)
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for op, value in state.drain():
            await producer.send_and_wait(changelog_topic_name(d.app_id), value, key=op,
                                         partition=0)
    finally:
        await producer.stop()


async def _commit(config: Config, offset: int) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.dedup.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(config.topics.raw, 0)
        consumer.assign([tp])
        await consumer.commit({tp: offset})
    finally:
        await consumer.stop()


async def _committed_reaches(config: Config, offset: int) -> bool:
    """Whether the worker's offset commit on raw reaches ``offset`` (it must not stall behind
    offsets it read back itself or that hold no record)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.dedup.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        for _ in range(60):
            if (await consumer.committed(TopicPartition(config.topics.raw, 0)) or 0) >= offset:
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await consumer.stop()


async def test_offsets_committed_past_the_judged_position_are_read_again(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Judged up to 40, committed at 70: the worker reads 40-69 back itself, so they reach
    clean (once), and 0-39, already judged, do not come again."""
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=1)
    items = [(k, T0 + k) for k in range(100)]
    await _topics(config)
    await produce(bootstrap, config.topics.raw, items)
    await _judged_changelog(config, items[:40])
    await _commit(config, 70)
    # the ops are readable before the worker starts: a changelog topic created a moment before
    # a worker's recovery was once recovered as empty (faust's first metadata for it)
    assert len(await read_all(bootstrap, changelog_topic_name(config.dedup.app_id), expect=2,
                              settle_s=0.0)) == 2
    with workers(tmp_path, tmp_path / "c.toml") as start:
        worker = start("w1")
        clean = await read_all(bootstrap, config.topics.clean, expect=60, settle_s=1.0)
        assert await _committed_reaches(config, 100)
        assert worker.terminate() == 0
        read_back = worker.events("dedup.skipped_read_back")  # the log is complete now
    counts = dedup_keys(clean)
    assert set(counts) == expected_keys(list(range(40, 100)))
    assert max(counts.values()) == 1
    # the planted hole first; faust may skip more records later on, which are read back too
    assert [(e["partition"], e["start"], e["end"], e["records"]) for e in read_back][:1] == [
        (0, 40, 70, 30)]


async def test_transaction_markers_in_raw_are_not_taken_for_lost_records(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A raw topic written in transactions has offsets without records (commit markers): the
    worker finds nothing to read back there, goes past them, and forwards every key once."""
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=1)
    await _topics(config)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic_prefix}.tx")
    await producer.start()
    try:
        for batch in range(4):
            async with producer.transaction():
                for key in range(batch * 25, batch * 25 + 25):
                    k, v, h = frame(key)
                    await producer.send(config.topics.raw, v, key=k, headers=h, partition=0,
                                        timestamp_ms=int((T0 + key) * 1000))
    finally:
        await producer.stop()
    with workers(tmp_path, tmp_path / "c.toml") as start:
        worker = start("w1")
        clean = await read_all(bootstrap, config.topics.clean, expect=100, settle_s=1.0)
        # records 0-24, 26-50, 52-76 and 78-102 (markers between, and one at 103)
        assert await _committed_reaches(config, 103)
        assert worker.terminate() == 0
        holes = worker.events("dedup.skipped_read_back")
    counts = dedup_keys(clean)
    assert set(counts) == expected_keys(list(range(100)))
    assert max(counts.values()) == 1
    # markers after the first three transactions sit between records (the fourth is last)
    assert sorted((e["start"], e["end"], e["records"]) for e in holes) == [
        (25, 26, 0), (51, 52, 0), (77, 78, 0)]
