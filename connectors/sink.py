"""The Kafka side of the connector: one idempotent aiokafka producer for the whole process.

Records follow ``../shared/contracts/kafka-and-cli.md`` exactly: raw events keyed by
``correlationId`` with the frame's bytes verbatim and the contract's headers; bad frames on the
DLQ topic keyed by stream name, the bytes (base64 when they are not UTF-8 text) and a reason;
cursors on the compacted cursor topic (``cursor_store``). ``acks="all"`` plus idempotence: an
acknowledged record is on every in-sync replica once, however often the producer retried.

``send_*`` return the delivery future once the record is in the producer's buffer (awaiting them
when the buffer is full is the back-pressure on the WebSocket reader).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from aiokafka import AIOKafkaProducer

from connectors import records
from connectors.config import KafkaSettings, TopicNames
from connectors.platforms import Frame
from connectors.records import Headers

# a DLQ record must fit in a Kafka request (1 MiB by default): longer frames are cut, and the
# reason says so (the frame's head is what an operator needs to see what was sent)
DLQ_MAX_VALUE_BYTES = 512 * 1024

DeliveryFuture = asyncio.Future[Any]


class KafkaSink:
    def __init__(self, kafka: KafkaSettings, topics: TopicNames) -> None:
        self.kafka = kafka
        self.topics = topics
        self._producer = AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=kafka.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=int(kafka.linger_ms),
            max_batch_size=kafka.max_batch_bytes,
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def flush(self) -> None:
        await self._producer.flush()

    async def send_event(self, stream: str, platform: str, frame: Frame,
                         received_at: float) -> DeliveryFuture:
        headers: Headers = [
            (records.H_STREAM, stream.encode()),
            (records.H_PLATFORM, platform.encode()),
            (records.H_DEDUP_KEY, frame.dedup_key.encode()),
            (records.H_RECEIVED_AT, records.rfc3339(received_at).encode()),
        ]
        if frame.cursor is not None:
            headers.append((records.H_CURSOR, frame.cursor.encode()))
        future: DeliveryFuture = await self._producer.send(
            self.topics.raw, value=frame.raw, key=frame.correlation_id.encode(), headers=headers,
        )
        return future

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> DeliveryFuture:
        value, encoding, reason = dlq_value(raw, reason, binary)
        headers: Headers = [
            (records.H_STREAM, stream.encode()),
            (records.H_PLATFORM, platform.encode()),
            (records.H_RECEIVED_AT, records.rfc3339(received_at).encode()),
            (records.H_DLQ_REASON, reason.encode()),
            (records.H_DLQ_ENCODING, encoding.encode()),
        ]
        future: DeliveryFuture = await self._producer.send(
            self.topics.dlq, value=value, key=stream.encode(), headers=headers,
        )
        return future

    async def send_cursor(self, stream: str, value: bytes) -> DeliveryFuture:
        future: DeliveryFuture = await self._producer.send(
            self.topics.cursors, value=value, key=stream.encode(),
        )
        return future


def dlq_value(raw: bytes, reason: str, binary: bool) -> tuple[bytes, str, str]:
    """The DLQ value, its encoding (``utf-8`` or ``base64``) and the reason, cut if too long."""
    if len(raw) > DLQ_MAX_VALUE_BYTES:
        reason = f"{reason}; value cut to the first {DLQ_MAX_VALUE_BYTES} of {len(raw)} bytes"
        raw = raw[:DLQ_MAX_VALUE_BYTES]
    if not binary:
        try:
            raw.decode()
        except UnicodeDecodeError:
            binary = True
    if binary:
        return base64.b64encode(raw), "base64", reason
    return raw, "utf-8", reason
