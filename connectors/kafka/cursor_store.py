"""Cursors in Kafka: the compacted cursor topic, written by stream name, read back at start-up.

Key = stream name, value = JSON ``{"platform", ..., "updated_at"}`` where ``...`` is the body the
stream's source made (``checkpoint``): ``since`` or ``cursor`` for the guide's flavours,
``watermark`` / ``open_gaps`` / ``channels`` for Genesys Cloud, ``endpoints`` / ``open_gaps`` for
CXone (docs/kafka.md). In cluster mode the value also says which instance wrote it (``owner``).
Readers ignore keys they do not know. Consumer-group offsets are not used (they expire).

Reading: ``read_committed``, up to the **high watermark**. In cluster mode cursors are written in
transactions (one transactional producer per slot), and an aborted one (a zombie's) must never be
taken for a cursor. The end to read to is the high watermark (a ``read_uncommitted`` end offset),
not the last stable offset a ``read_committed`` consumer reports: cursors of another slot's
transaction still open would otherwise hide every cursor committed after it began, and the
reader would miss the one it is there for. Reaching the high watermark read_committed means
waiting for the transactions open below it to end (milliseconds; an abandoned one ends when its
slot is taken over, which fences it, or after the transaction timeout). Kafka Connect reads its
offsets the same way (KIP-618).

``CursorTail`` follows the topic for as long as it runs (cluster mode keeps one per instance and
asks it for "everything up to now" at each slot takeover); ``load`` is one such read from the
beginning, for start-up and ``ccstream cursors``. A later value of one key replaces an earlier
one, an empty value (tombstone) deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

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
    body: dict[str, Any]   # every field but platform, updated_at and owner
    updated_at: str        # RFC 3339
    owner: str | None = None  # cluster mode: the instance that wrote it

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


_META = ("platform", "updated_at", "owner")


def encode(platform: str, body: dict[str, Any], updated_at: float,
           owner: str | None = None) -> bytes:
    doc = {"platform": platform, **body, "updated_at": rfc3339(updated_at)}
    if owner is not None:
        doc["owner"] = owner
    return orjson.dumps(doc)


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
    body = {k: v for k, v in doc.items() if k not in _META}
    owner = doc.get("owner")
    return StoredCursor(doc["platform"], body, str(doc.get("updated_at", "")),
                        owner if isinstance(owner, str) else None)


async def load(bootstrap_servers: str, topic: str) -> dict[str, StoredCursor]:
    """The latest cursor of every stream in ``topic`` (empty if the topic is empty)."""
    # asked of the broker, not of a fresh consumer's metadata cache (which does not know the topic)
    if await partition_count(bootstrap_servers, topic) == 0:
        return {}
    tail = CursorTail(bootstrap_servers, topic)
    await tail.start()
    try:
        cursors, _ = await tail.read_to_hw(LOAD_TIMEOUT_S)
        return cursors
    finally:
        await tail.stop()


class CursorTail:
    """The cursor topic followed ``read_committed`` from its beginning, into ``cursors``.

    ``read_to_hw`` answers once everything up to the high watermark of *now* has been read. The
    tail runs in one background task; if it dies, every ``read_to_hw`` waiting or to come raises
    (nothing waits on a dead reader).
    """

    def __init__(self, bootstrap_servers: str, topic: str, *, client_id: str = "ccstream",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.client_id = client_id
        self.clock = clock
        self.cursors: dict[str, StoredCursor] = {}
        self._tps: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._ends: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._moved = asyncio.Event()
        self._error: BaseException | None = None

    async def start(self) -> None:
        count = await partition_count(self.bootstrap_servers, self.topic)
        if count == 0:
            raise CursorStoreError(self.topic, "does not exist")
        self._tps = [TopicPartition(self.topic, p) for p in range(count)]
        # no group, no seek: a fresh assignment starts at the earliest offset ("earliest"),
        # which is also where a compacted topic's first record is
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-cursors",
            enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
            isolation_level="read_committed")
        # only for the high watermark: a read_uncommitted consumer's end offsets
        self._ends = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-cursors-hw",
            enable_auto_commit=False, group_id=None, isolation_level="read_uncommitted")
        await self._consumer.start()
        await self._ends.start()
        self._consumer.assign(self._tps)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cursor-tail")
        self._task.add_done_callback(self._died)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for consumer in (self._consumer, self._ends):
            if consumer is not None:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def high_watermarks(self) -> dict[TopicPartition, int]:
        if self._ends is None:
            raise RuntimeError("CursorTail.start() was not called")
        ends: dict[TopicPartition, int] = await self._ends.end_offsets(self._tps)
        return ends

    async def read_to_hw(self, timeout_s: float
                         ) -> tuple[dict[str, StoredCursor], dict[TopicPartition, int]]:
        """Every stream's latest committed cursor, read up to the high watermark of now."""
        deadline = self.clock() + timeout_s
        async with asyncio.timeout(timeout_s):
            hw = await self.high_watermarks()
        while True:
            if self._error is not None:
                raise CursorStoreError(self.topic, f"the reader failed: {self._error!r}")
            if all(self._positions.get(tp, 0) >= end for tp, end in hw.items()):
                return dict(self.cursors), hw
            left = deadline - self.clock()
            if left <= 0:
                raise CursorStoreError(self.topic, f"not read to its end within {timeout_s} s")
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), min(left, 0.5))

    async def wait(self) -> None:
        """Until the reader stops: returns or raises as it did (a supervisor's watch)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while True:
            try:
                batches = await consumer.getmany(*self._tps, timeout_ms=500)
            except KafkaError as err:
                if not getattr(err, "retriable", False):
                    raise
                await asyncio.sleep(0.5)  # a broker moving or restarting: read on after it
                continue
            for messages in batches.values():
                for message in messages:
                    self._apply(message.key, message.value)
            for tp in self._tps:
                self._positions[tp] = await consumer.position(tp)
            self._moved.set()

    def _apply(self, key: bytes | None, raw: bytes | None) -> None:
        if key is None:
            return
        name = bytes(key).decode(errors="replace")
        value = decode(raw)
        if value is None:
            self.cursors.pop(name, None)
        else:
            self.cursors[name] = value

    def _died(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        self._error = error or CursorStoreError(self.topic, "the reader stopped")
        self._moved.set()
