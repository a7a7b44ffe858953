"""An in-memory ``Sink`` for component tests: sources against the simulator, no broker.

It acknowledges every record at once (or fails or holds them on request), keeps what it was
given in order, and is the one stand-in for Kafka the test tiers allow: component tests of a
source's behaviour against a platform. Anything about Kafka itself is tested on the real broker.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson

from ccstream import records
from connectors.platforms import Frame


@dataclass
class Sent:
    topic: str            # "raw" or "dlq"
    key: str
    value: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.value)


@dataclass
class MemorySink:
    raw_limit: int = 1_048_576
    hold: bool = False                      # True: futures stay pending until release()
    fail: bool = False                      # True: futures fail (a Kafka outage)
    sent: list[Sent] = field(default_factory=list)
    _pending: list[asyncio.Future[Any]] = field(default_factory=list)

    async def send_event(self, stream: str, platform: str, frame: Frame,
                         received_at: float) -> asyncio.Future[Any]:
        headers = {records.H_STREAM: stream, records.H_PLATFORM: platform,
                   records.H_DEDUP_KEY: frame.dedup_key,
                   records.H_RECEIVED_AT: records.rfc3339(received_at)}
        if frame.cursor is not None:
            headers[records.H_CURSOR] = frame.cursor
        if frame.origin is not None:
            headers[records.H_SOURCE] = frame.origin
        if frame.gap is not None:
            headers[records.H_GAP] = frame.gap
        self.sent.append(Sent("raw", frame.correlation_id, frame.raw, headers))
        return self._future()

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> asyncio.Future[Any]:
        self.sent.append(Sent("dlq", stream, raw, {records.H_DLQ_REASON: reason,
                                                   records.H_STREAM: stream}))
        return self._future()

    async def refresh_limits(self) -> None:
        return None

    def _future(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            future.set_exception(ConnectionError("the in-memory sink is failing"))
        elif self.hold:
            self._pending.append(future)
        else:
            future.set_result(None)
        return future

    def release(self) -> None:
        """Acknowledge every held record."""
        self.hold = False
        for future in self._pending:
            if not future.done():
                future.set_result(None)
        self._pending.clear()

    def raw(self) -> list[Sent]:
        return [s for s in self.sent if s.topic == "raw"]

    def dlq(self) -> list[Sent]:
        return [s for s in self.sent if s.topic == "dlq"]
