"""Cursors in Kafka: the compacted cursor topic, written by stream name, read back at start-up.

Key = stream name, value = JSON ``{"platform", ..., "updated_at"}`` where ``...`` is the body the
stream's source made (``checkpoint``): ``since`` or ``cursor`` for the guide's flavours,
``watermark`` / ``open_gaps`` / ``channels`` for Genesys Cloud, ``endpoints`` / ``open_gaps`` for
CXone (docs/kafka.md). Readers ignore keys they do not know. Consumer-group offsets are not used
(they expire). The topic is read ``read_committed``: in cluster mode cursors are written in
transactions, and an aborted one must never be taken for a cursor. Start-up reads the topic from
its beginning to the end offsets it had when reading began, so the last value of every stream is
seen even before compaction has run; a later value of one key replaces an earlier one, an empty
value (tombstone) deletes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ccstream.errors import CcstreamError
from ccstream.records import rfc3339
from ccstream.topics import partition_count

LOAD_TIMEOUT_S = 60.0


class CursorStoreError(CcstreamError, RuntimeError):
    retriable = True

    def __init__(self, topic: str, problem: str) -> None:
        super().__init__(f"cursor topic {topic}: {problem}")
        self.topic = topic
        self.problem = problem


@dataclass(frozen=True)
class StoredCursor:
    platform: str
    body: dict[str, Any]   # every field but platform and updated_at
    updated_at: str        # RFC 3339

    @property
    def param(self) -> str:
        """The guide flavours' resume parameter: "since" (Genesys), "cursor" (NICE), or ""."""
        return next((p for p in _GUIDE_PARAMS if isinstance(self.body.get(p), str)), "")

    @property
    def value(self) -> str | None:
        """The guide flavours' resume point (None for the other platforms' cursors)."""
        value = self.body.get(self.param) if self.param else None
        return value if isinstance(value, str) else None

    def describe(self) -> str:
        """One line for ``ccstream cursors``: the resume point, watermark, endpoints, gaps."""
        if self.value is not None:
            return f"{self.param}={self.value}"
        parts = []
        if "watermark" in self.body:
            parts.append(f"watermark={self.body['watermark']}")
        endpoints = self.body.get("endpoints")
        if isinstance(endpoints, dict):
            parts += [f"{name}={value}" for name, value in sorted(endpoints.items())]
        gaps = self.body.get("open_gaps")
        if isinstance(gaps, list):
            parts.append("open_gaps=" + (",".join(
                "/".join(map(str, g)) for g in gaps if isinstance(g, list)) or "none"))
        return " ".join(parts) or orjson.dumps(self.body).decode()

    def updated_epoch(self) -> float | None:
        try:
            return datetime.fromisoformat(self.updated_at).timestamp()
        except ValueError:
            return None


_GUIDE_PARAMS = ("since", "cursor")


def encode(platform: str, body: dict[str, Any], updated_at: float) -> bytes:
    return orjson.dumps({"platform": platform, **body, "updated_at": rfc3339(updated_at)})


def decode(raw: bytes | None) -> StoredCursor | None:
    """A cursor record's value; None for tombstones and for values that are not ours."""
    if not raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("platform"), str):
        return None
    body = {k: v for k, v in doc.items() if k not in ("platform", "updated_at")}
    return StoredCursor(doc["platform"], body, str(doc.get("updated_at", "")))


async def load(bootstrap_servers: str, topic: str) -> dict[str, StoredCursor]:
    """The latest cursor of every stream in ``topic`` (empty if the topic is empty)."""
    # asked of the broker, not of a fresh consumer's metadata cache (which does not know the topic)
    count = await partition_count(bootstrap_servers, topic)
    if count == 0:
        return {}
    tps = [TopicPartition(topic, p) for p in range(count)]
    # no group, no seek: a fresh assignment starts at the earliest offset ("earliest"), which is
    # also where a compacted topic's first record is (seek_to_beginning raced with "latest")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        return await _read_to(consumer, topic, ends)
    finally:
        await consumer.stop()


async def _read_to(consumer: AIOKafkaConsumer, topic: str,
                   ends: dict[TopicPartition, int]) -> dict[str, StoredCursor]:
    out: dict[str, StoredCursor] = {}
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    todo = {tp for tp, end in ends.items() if end > 0}
    while todo:
        if time.monotonic() > deadline:
            raise CursorStoreError(topic, f"not read to its end within {LOAD_TIMEOUT_S} s")
        batches = await consumer.getmany(*todo, timeout_ms=500)
        for tp, messages in batches.items():
            for message in messages:
                if message.offset >= ends[tp] or message.key is None:
                    continue
                name = bytes(message.key).decode(errors="replace")
                value = decode(message.value)
                if value is None:
                    out.pop(name, None)
                else:
                    out[name] = value
        todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
    return out
