"""Replay: reprocess raw records since TIME through the running dedup worker, and count.

Mechanism (chosen because it adds no second path to clean): the raw records whose Kafka
timestamp is >= TIME (found per partition with ``offsets_for_times``) are re-injected into the
*same raw partition*, bytes, key and headers kept, plus a ``ccstream-replay: <id>`` header. The
contract allows replays in raw ("every event received, replays included"), and the worker
judges them like any other record: a copy of an event clean already holds (within the window
W) is dropped, anything else goes to clean once. Clean records keep their headers, so the
injected records that reached clean are the ones carrying the replay id.

The report waits until the dedup group's committed offsets pass the injected end offsets (the
worker has judged every injected record, in committed transactions), then counts clean records
with the replay id: forwarded = that count, dropped = injected - forwarded - DLQ'd. A replay
needs a running dedup worker; without one it waits up to ``timeout_s`` and says so.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ccstream.config import Config, ConfigError
from ccstream.records import H_DLQ_REASON, Headers, header
from ccstream.topics import partition_count

H_REPLAY = "ccstream-replay"


def parse_since(text: str) -> float:
    """TIME as epoch seconds: RFC 3339 (``2024-01-15T10:30:00Z``) or epoch seconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("--since", f"{text!r} is neither RFC 3339 nor epoch seconds") from None
    if moment.tzinfo is None:
        raise ConfigError("--since", f"{text!r} has no time zone (add Z for UTC)")
    return moment.timestamp()


@dataclass(frozen=True)
class ReplayReport:
    replay_id: str
    injected: int
    forwarded: int
    dlq: int
    complete: bool

    @property
    def dropped(self) -> int:
        return self.injected - self.forwarded - self.dlq

    def line(self) -> str:
        state = "" if self.complete else " (worker not done: counts are partial)"
        return (f"replay {self.replay_id}: {self.injected} raw records re-injected, "
                f"{self.forwarded} forwarded to clean, {self.dropped} dropped as duplicates, "
                f"{self.dlq} to the DLQ{state}")


async def replay(config: Config, since_s: float, timeout_s: float = 300.0) -> ReplayReport:
    """Re-inject raw records since ``since_s``, wait for the worker, and count the outcome."""
    bootstrap, raw = config.kafka.bootstrap_servers, config.topics.raw
    partitions = await partition_count(bootstrap, raw)
    if not partitions:
        raise ConfigError("topics.raw", f"topic {raw} does not exist")
    replay_id = uuid.uuid4().hex[:12]
    tps = [TopicPartition(raw, p) for p in range(partitions)]
    started = time.time()
    injected, ends = await _inject(config, tps, since_s, replay_id)
    complete = await _wait_committed(config, ends, timeout_s)
    forwarded = await _count_marked(config, config.topics.clean, started, replay_id)
    dlq = await _count_marked(config, config.topics.dlq, started, replay_id, dlq=True)
    return ReplayReport(replay_id, injected, forwarded, dlq, complete)


async def _inject(config: Config, tps: list[TopicPartition], since_s: float,
                  replay_id: str) -> tuple[int, dict[TopicPartition, int]]:
    bootstrap = config.kafka.bootstrap_servers
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=config.kafka.linger_ms)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps})
        stops = await consumer.end_offsets(tps)  # records injected now are not re-read
        sent = []
        for tp in tps:
            found = starts.get(tp)
            if found is None or found.offset >= stops[tp]:
                continue
            consumer.seek(tp, found.offset)
            async for record in _until(consumer, tp, stops[tp]):
                headers: Headers = [*record.headers, (H_REPLAY, replay_id.encode())]
                sent.append(await producer.send(tp.topic, record.value, key=record.key,
                                                partition=tp.partition, headers=headers))
        await asyncio.gather(*sent)
        ends = await consumer.end_offsets(tps)
        return len(sent), ends
    finally:
        await producer.stop()
        await consumer.stop()


async def _until(consumer: AIOKafkaConsumer, tp: TopicPartition, stop: int) -> AsyncIterator[Any]:
    """Records of one partition up to (excluding) offset ``stop``."""
    while await consumer.position(tp) < stop:
        batch = await consumer.getmany(tp, timeout_ms=500)
        for record in batch.get(tp, []):
            if record.offset >= stop:
                return
            yield record


async def _wait_committed(config: Config, ends: dict[TopicPartition, int],
                          timeout_s: float) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.dedup.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            committed = {tp: await consumer.committed(tp) or 0 for tp in ends}
            if all(committed[tp] >= end for tp, end in ends.items()):
                return True
            await asyncio.sleep(0.5)
        return False
    finally:
        await consumer.stop()


async def _count_marked(config: Config, topic: str, since_s: float, replay_id: str,
                        dlq: bool = False) -> int:
    """Records of ``topic`` written since ``since_s`` that carry the replay id."""
    bootstrap = config.kafka.bootstrap_servers
    partitions = await partition_count(bootstrap, topic)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # injected records were stamped when injected, and clean/DLQ records keep the raw
        # record's timestamp: only records since the replay started need a look
        starts = await consumer.offsets_for_times({tp: int(since_s * 1000) for tp in tps})
        count, marker = 0, replay_id.encode()
        for tp in tps:
            found = starts.get(tp)
            if found is None:
                continue
            consumer.seek(tp, found.offset)
            async for record in _until(consumer, tp, ends[tp]):
                if header(list(record.headers), H_REPLAY) == marker and (
                        not dlq or header(list(record.headers), H_DLQ_REASON) is not None):
                    count += 1
        return count
    finally:
        await consumer.stop()
