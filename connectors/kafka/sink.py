"""The Kafka side of the connector: one idempotent aiokafka producer for the whole process.

Records follow ``docs/kafka.md`` exactly: raw events keyed by
``correlationId`` with the frame's bytes verbatim and the contract's headers; bad frames on the
DLQ topic keyed by stream name, the bytes (base64 when they are not UTF-8 text) and a reason;
cursors on the compacted cursor topic (``cursor_store``). ``acks="all"`` plus idempotence: an
acknowledged record is on every in-sync replica once, however often the producer retried.

``send_*`` return the delivery future once the record is in the producer's buffer (awaiting them
when the buffer is full is the back-pressure on the WebSocket reader).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, RecordTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from ccstream import records
from ccstream.config import KafkaSettings, TopicNames
from ccstream.records import Headers
from ccstream.topics import max_record_bytes, topic_config
from connectors.platforms import Frame

DeliveryFuture = asyncio.Future[Any]

# Hot-path caches (bench/bench_ingest.py measures the connector against a bare
# receive->send loop; these are the cheap parts of what it costs more):
# a record's size is bounded without the exact estimate unless it is near the limit
_RECORD_OVERHEAD_BOUND = 128  # batch-independent record framing + varints, generously
_HEADER_OVERHEAD_BOUND = 16
# partitions of correlation ids already seen (aiokafka's murmur2 is pure Python)
_PARTITION_CACHE_MAX = 200_000
# a header's share of that bound, less its value's length
_HEADER_BOUND = {name: len(name) + _HEADER_OVERHEAD_BOUND for name in (
    records.H_DEDUP_KEY, records.H_RECEIVED_AT, records.H_CURSOR, records.H_SOURCE,
    records.H_GAP)}

_WORD = struct.Struct("<I")
_M = 0x5BD1E995


def murmur2(data: bytes) -> int:
    """``aiokafka.partitioner.murmur2`` (the Java client's ``Utils.murmur2``), equal on every
    input and about twice as fast: the 4-byte words are read by ``struct``, not byte by byte
    (it runs for every correlation id not seen yet)."""
    length = len(data)
    h = 0x9747B28C ^ length
    end = length & ~3
    for (word,) in _WORD.iter_unpack(data[:end]):
        k = (word * _M) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * _M) & 0xFFFFFFFF
        h = ((h * _M) & 0xFFFFFFFF) ^ k
    if end != length:  # the last 1-3 bytes, little-endian
        h = ((h ^ int.from_bytes(data[end:], "little")) * _M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _M) & 0xFFFFFFFF
    return h ^ (h >> 15)


class KafkaSink:
    def __init__(self, kafka: KafkaSettings, topics: TopicNames,
                 max_frame_bytes: int | None = None) -> None:
        self.kafka = kafka
        self.topics = topics
        # a frame the connector accepts must fit in one request: aiokafka checks each record
        # against max_request_size, whose default (1 MiB) is below a 1 MiB frame plus headers
        self.max_request_bytes = (1_048_576 if max_frame_bytes is None
                                  else max_record_bytes(max_frame_bytes))
        # the largest raw record the topic takes (its max.message.bytes, read at start):
        # a larger record would be refused with its whole batch, innocent neighbours included,
        # so it is refused here, before it joins a batch, and diverted to the DLQ (``delivery``)
        self.raw_limit = self.max_request_bytes
        self._producer: AIOKafkaProducer | None = None
        self._raw_partitions = 0
        self._partition_of: dict[bytes, int] = {}
        self._headers_of: dict[tuple[str, str], tuple[Headers, int]] = {}
        self._received_at: tuple[int, bytes] = (-1, b"")

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("KafkaSink.start() was not called")
        return self._producer

    async def start(self) -> None:
        await self.refresh_limits()
        kafka = self.kafka
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=kafka.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(kafka.linger_ms),
            # a batch larger than the topic's limit is refused whole
            max_batch_size=max(1024, min(kafka.max_batch_bytes, self.raw_limit)),
            max_request_size=self.max_request_bytes,
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
        )
        await self._producer.start()

    async def refresh_limits(self) -> None:
        """Read the raw topic's ``max.message.bytes`` (kept as it was if it cannot be read)."""
        try:
            config = await topic_config(self.kafka.bootstrap_servers, self.topics.raw)
            limit = int(config["max.message.bytes"])
        except (KafkaError, KeyError, ValueError, OSError):
            return
        self.raw_limit = min(self.max_request_bytes, limit)

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def flush(self) -> None:
        await self.producer.flush()

    def send_event(self, stream: str, platform: str, frame: Frame,
                   received_at: float) -> Coroutine[Any, Any, DeliveryFuture]:
        """The awaitable of the record's send (``Sink.send_event``). Not a coroutine itself: it
        returns the producer's ``send()``, one coroutine fewer per event; a record refused
        here (``RecordTooLargeError``) is refused when this is called."""
        prefix, bound = self._stream_headers(stream, platform)
        dedup = frame.dedup_key.encode()
        received = self._rfc3339(received_at)
        headers: Headers = [*prefix, (records.H_DEDUP_KEY, dedup),
                            (records.H_RECEIVED_AT, received)]
        key = frame.correlation_id.encode()
        raw = frame.raw
        # the cheap size bound of ``_check_size``: the fixed headers' share is precomputed
        bound += len(key) + len(raw) + len(dedup) + len(received)
        if frame.cursor is not None:
            value = frame.cursor.encode()
            headers.append((records.H_CURSOR, value))
            bound += _HEADER_BOUND[records.H_CURSOR] + len(value)
        if frame.origin is not None:
            value = frame.origin.encode()
            headers.append((records.H_SOURCE, value))
            bound += _HEADER_BOUND[records.H_SOURCE] + len(value)
            if frame.gap is not None:
                value = frame.gap.encode()
                headers.append((records.H_GAP, value))
                bound += _HEADER_BOUND[records.H_GAP] + len(value)
        if bound > self.raw_limit:
            self._check_size(key, raw, headers)
        partition = self._partition_of.get(key)
        if partition is None:
            if not self._raw_partitions:  # the first event: the partition count is not known
                return self._send_first(key, raw, headers)
            partition = self._partition_for(key)
        return self.producer.send(  # type: ignore[no-any-return]  # aiokafka is untyped
            self.topics.raw, value=raw, key=key, headers=headers, partition=partition)

    async def _send_first(self, key: bytes, raw: bytes, headers: Headers) -> DeliveryFuture:
        self._raw_partitions = len(await self.producer.partitions_for(self.topics.raw))
        future: DeliveryFuture = await self.producer.send(
            self.topics.raw, value=raw, key=key, headers=headers,
            partition=self._partition_for(key))
        return future

    def lane_of(self, frame: Frame) -> int:
        """The raw partition ``send_event`` just sent ``frame`` to (``Delivery`` settles the
        records of each partition in order, one done-callback per batch)."""
        return self._partition_of.get(frame.correlation_id.encode(), -1)

    def _stream_headers(self, stream: str, platform: str) -> tuple[Headers, int]:
        """The headers every record of ``stream`` carries, and the part of the size bound that
        does not depend on the record (built once per stream)."""
        cached = self._headers_of.get((stream, platform))
        if cached is None:
            prefix: Headers = [(records.H_STREAM, stream.encode()),
                               (records.H_PLATFORM, platform.encode())]
            bound = (_RECORD_OVERHEAD_BOUND + sum(len(k) + len(v) + _HEADER_OVERHEAD_BOUND
                                                  for k, v in prefix)
                     + _HEADER_BOUND[records.H_DEDUP_KEY] + _HEADER_BOUND[records.H_RECEIVED_AT])
            cached = self._headers_of[(stream, platform)] = (prefix, bound)
        return cached

    def _check_size(self, key: bytes, value: bytes, headers: Headers) -> None:
        bound = (len(key) + len(value) + _RECORD_OVERHEAD_BOUND
                 + sum(len(k) + len(v) + _HEADER_OVERHEAD_BOUND for k, v in headers))
        if bound <= self.raw_limit:
            return
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.raw_limit:
            raise RecordTooLargeError(f"{size} bytes > {self.raw_limit} (the raw topic's limit)")

    def _partition_for(self, key: bytes) -> int:
        """The partition aiokafka's default partitioner would pick (murmur2 of the key over all
        partitions, as the Java client does), cached per correlation id."""
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= _PARTITION_CACHE_MAX:
                self._partition_of.clear()
            partition = (murmur2(key) & 0x7FFFFFFF) % self._raw_partitions
            self._partition_of[key] = partition
        return partition

    def _rfc3339(self, epoch_s: float) -> bytes:
        """``records.rfc3339`` as bytes, formatted once per millisecond."""
        ms = int(epoch_s * 1000)
        cached_ms, text = self._received_at
        if ms != cached_ms:
            text = records.rfc3339(ms / 1000).encode()
            self._received_at = (ms, text)
        return text

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> DeliveryFuture:
        value, encoding, reason = records.dlq_value(raw, reason, binary)
        headers: Headers = [
            (records.H_STREAM, stream.encode()),
            (records.H_PLATFORM, platform.encode()),
            (records.H_RECEIVED_AT, records.rfc3339(received_at).encode()),
            (records.H_DLQ_REASON, reason.encode()),
            (records.H_DLQ_ENCODING, encoding.encode()),
        ]
        future: DeliveryFuture = await self.producer.send(
            self.topics.dlq, value=value, key=stream.encode(), headers=headers,
        )
        return future

    async def send_cursor(self, stream: str, value: bytes) -> DeliveryFuture:
        future: DeliveryFuture = await self.producer.send(
            self.topics.cursors, value=value, key=stream.encode(),
        )
        return future
