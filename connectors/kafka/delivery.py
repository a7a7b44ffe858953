"""One stream's records on their way into Kafka: sends, acknowledgements, the DLQ, failures.

Every record the stream hands to the producer (events to the raw topic, bad frames to the DLQ) is
tracked in ``Progress`` in arrival order, so the resume point only moves over what Kafka has
acknowledged (``docs/kafka.md``: "a cursor is written only after every event up to it has been
acknowledged"). A failed send blocks the resume point and calls ``on_failure`` (the session then
reconnects: the platform replays from the acknowledged prefix).

A record Kafka can *never* take is different: an event over the producer's ``max_request_size``
or the raw topic's ``max.message.bytes`` would fail again on every replay and wedge the stream in
a replay loop. The sink refuses such a record before it joins a batch (``KafkaSink.raw_limit``);
it is diverted to the DLQ (cut, with the reason) and counts as delivered once the DLQ has it; the
stream goes on ("bad input gets a clear error or a DLQ record"). If the broker still refuses a
batch as too large (the topic's limit shrank after start), the limit is read again and the
replay after the reconnect diverts the record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from ccstream import metrics
from ccstream.config import AnyStream
from ccstream.logs import BoundLogger
from connectors.kafka.sink import DeliveryFuture
from connectors.platforms import Frame, FrameKind
from connectors.policy.progress import Progress
from connectors.sources.base import Sink
from connectors.sources.wire import redact_text

# the broker or the producer will refuse this record whatever happens: never retry it
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


def safe_error(err: BaseException) -> str:
    """An exception as text with any token-bearing query value cut out."""
    return redact_text(f"{type(err).__name__}: {err}")


class Delivery:
    def __init__(self, stream: AnyStream, sink: Sink, progress: Progress,
                 wall: Callable[[], float], *, log: BoundLogger,
                 on_failure: Callable[[], None]) -> None:
        self.stream = stream
        self.sink = sink
        self.progress = progress
        self.wall = wall
        self.log = log
        self.on_failure = on_failure
        self._pending: set[asyncio.Future[object]] = set()
        self.last_event = wall()  # wall time of the last event (of the start, before one)
        # this stream's metric children, looked up once (a labels() call per event is costly)
        name = stream.name
        self._events_in = metrics.EVENTS_IN.labels(name)
        self._last_event_ts = metrics.LAST_EVENT_TS.labels(name)
        self._produced = metrics.EVENTS_PRODUCED.labels(name)

    async def handle(self, frame: Frame) -> None:
        """An event goes to the raw topic, a heartbeat is counted, bad input goes to the DLQ."""
        if frame.kind is FrameKind.EVENT:
            await self.event(frame)
        elif frame.kind is FrameKind.HEARTBEAT:
            metrics.HEARTBEATS.labels(self.stream.name).inc()
        else:
            await self.dead_letter(frame.raw, frame.reason, frame.binary)

    async def event(self, frame: Frame) -> None:
        name, wall = self.stream.name, self.wall()
        self._events_in.inc()
        self._last_event_ts.set(wall)
        self.last_event = wall
        late = self.progress.late
        seq = self.progress.track(frame.position, frame.epoch)
        if self.progress.late != late:
            metrics.LATE_EVENTS.labels(name).inc()
            self.log.warning("stream.late_event", dedup_key=frame.dedup_key)
        try:
            future = await self.sink.send_event(name, self.stream.platform, frame, wall)
        except TOO_LARGE as err:  # refused before it joined a batch: it never will fit
            await self._divert(seq, frame, err)
            return
        except KafkaError as err:  # the producer's buffer stayed full: Kafka is not taking it
            self._failed(seq, err)
            return
        self._watch(seq, future, frame)

    async def dead_letter(self, raw: bytes, reason: str, binary: bool = False,
                          seq: int | None = None) -> None:
        """``raw`` to the DLQ with ``reason``; ``seq``: an event already tracked (diverted)."""
        name = self.stream.name
        metrics.EVENTS_DLQ.labels(name, reason.split(":", maxsplit=1)[0]).inc()
        self.log.warning("stream.bad_frame", reason=reason, size=len(raw))
        if seq is None:
            seq = self.progress.track(None)
        try:
            future = await self.sink.send_dlq(name, self.stream.platform, raw, reason,
                                              received_at=self.wall(), binary=binary)
        except KafkaError as err:
            self._failed(seq, err)
            return
        self._watch(seq, future)

    @property
    def in_flight(self) -> int:
        return sum(1 for f in self._pending if not f.done())

    async def drain(self) -> bool:
        """Wait until everything in flight is acknowledged or failed (however long)."""
        while pending := [f for f in self._pending if not f.done()]:
            await asyncio.wait(pending)
        return True

    async def settle(self, timeout_s: float) -> None:
        """Give sends still in flight a bounded time, so the resume point replays less."""
        pending = [f for f in self._pending if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def _watch(self, seq: int, future: DeliveryFuture, frame: Frame | None = None) -> None:
        self._pending.add(future)

        def done(f: DeliveryFuture) -> None:
            self._pending.discard(f)
            error = None if f.cancelled() else f.exception()
            if not f.cancelled() and error is None:
                self.progress.ack(seq)
                if frame is not None:
                    self._produced.inc()
                return
            self._failed(seq, error)
            if isinstance(error, TOO_LARGE):
                # the broker refuses a whole batch for one record, so which record is too
                # large is unknown here: learn the topic's limit again (it shrank since start),
                # then the replay diverts the large record before it joins a batch
                self._spawn(self.sink.refresh_limits())

        future.add_done_callback(done)

    def _failed(self, seq: int, error: BaseException | None) -> None:
        self.progress.fail(seq)
        self.log.error("kafka.send_failed",
                       error="cancelled" if error is None else safe_error(error))
        self.on_failure()

    async def _divert(self, seq: int, frame: Frame, err: BaseException) -> None:
        reason = (f"record_too_large: the {len(frame.raw)}-byte event does not fit in a Kafka "
                  f"record ({err}); raise max.message.bytes of the raw topic")
        await self.dead_letter(frame.raw, reason, seq=seq)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Work a done-callback starts (it cannot await); ``settle()`` waits for it."""
        task: asyncio.Future[object] = asyncio.ensure_future(work)
        self._pending.add(task)  # settle() waits for it; a strong reference until it is done
        task.add_done_callback(self._diverted)

    def _diverted(self, task: asyncio.Future[object]) -> None:
        self._pending.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log.error("kafka.send_failed", error=safe_error(error))
            self.on_failure()
