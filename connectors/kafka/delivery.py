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
from collections import deque
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
        # records handed to the sink, in arrival order per lane (see ``_Lane``); a sink that
        # says which partition a record goes to (``KafkaSink.lane_of``) gets one lane per
        # partition, any other sink one lane for its events
        self._lanes: dict[int, _Lane] = {}
        self._lane_of: Callable[[Frame], int] | None = getattr(sink, "lane_of", None)
        self._tasks: set[asyncio.Future[object]] = set()  # work done-callbacks started
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
        stream, wall = self.stream, self.wall()
        self._events_in.inc()
        self._last_event_ts.set(wall)
        self.last_event = wall
        progress = self.progress
        late = progress.late
        seq = progress.track(frame.position, frame.epoch)
        if progress.late != late:
            metrics.LATE_EVENTS.labels(stream.name).inc()
            self.log.warning("stream.late_event", dedup_key=frame.dedup_key)
        try:
            future = await self.sink.send_event(stream.name, stream.platform, frame, wall)
        except TOO_LARGE as err:  # refused before it joined a batch: it never will fit
            await self._divert(seq, frame, err)
            return
        except KafkaError as err:  # the producer's buffer stayed full: Kafka is not taking it
            self._failed(seq, err)
            return
        lane_of = self._lane_of
        self._watch(lane_of(frame) if lane_of is not None else _EVENTS, seq, future, True)

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
        self._watch(_DLQ, seq, future, False)

    @property
    def in_flight(self) -> int:
        return len(self._unfinished())

    async def drain(self) -> bool:
        """Wait until everything in flight is acknowledged or failed (however long)."""
        while pending := self._unfinished():
            await asyncio.wait(pending)
        return True

    async def settle(self, timeout_s: float) -> None:
        """Give sends still in flight a bounded time, so the resume point replays less."""
        pending = self._unfinished()
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    def _unfinished(self) -> list[asyncio.Future[object]]:
        pending: list[asyncio.Future[object]] = [
            f for lane in self._lanes.values() for _, f, _ in lane.records if not f.done()]
        pending += [t for t in self._tasks if not t.done()]
        return pending

    def _watch(self, lane_key: int, seq: int, future: DeliveryFuture, event: bool) -> None:
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane(self)
        lane.add(seq, future, event)

    def _settled(self, seq: int, future: DeliveryFuture) -> bool:
        """One record's outcome into ``Progress``; True if Kafka acknowledged it."""
        error = None if future.cancelled() else future.exception()
        if not future.cancelled() and error is None:
            self.progress.ack(seq)
            return True
        self._failed(seq, error)
        if isinstance(error, TOO_LARGE):
            # the broker refuses a whole batch for one record, so which record is too
            # large is unknown here: learn the topic's limit again (it shrank since start),
            # then the replay diverts the large record before it joins a batch
            self._spawn(self.sink.refresh_limits())
        return False

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
        self._tasks.add(task)  # settle() waits for it; a strong reference until it is done
        task.add_done_callback(self._diverted)

    def _diverted(self, task: asyncio.Future[object]) -> None:
        self._tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log.error("kafka.send_failed", error=safe_error(error))
            self.on_failure()


_EVENTS = -1  # the lane of events when the sink does not say their partition
_DLQ = -2     # the DLQ topic's records (keyed by stream name: one partition)


class _Lane:
    """The records of one partition (of every event, when the sink does not say partitions) in
    the order they were sent, with one done-callback at a time: on the oldest record not yet
    done.

    aiokafka resolves every record of a batch in one go, and the batches of a partition one
    after the other (one request in flight per partition, retries re-queued at the front). So
    when the oldest record's future is done, its whole batch is: the callback settles every
    record from the front that is done and waits on the next one, one callback per batch
    instead of one per record. Nothing here depends on that order for correctness: a record is
    settled only once its own future is done, and a lane never waits on a finished future.
    With a lane per partition a failure is seen as soon as the batch holding it completes, as
    it was with a callback on every record; in a shared lane, once the batches before it in
    the lane have completed too. Either way the resume point is the same: ``Progress`` only
    moves over the acknowledged prefix, and the front of a lane is part of what blocks it.
    """

    __slots__ = ("armed", "delivery", "records")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.records: deque[tuple[int, DeliveryFuture, bool]] = deque()
        self.armed = False

    def add(self, seq: int, future: DeliveryFuture, event: bool) -> None:
        self.records.append((seq, future, event))
        if not self.armed:
            self._arm()

    def _arm(self) -> None:
        self.armed = True
        self.records[0][1].add_done_callback(self._done)

    def _done(self, _: DeliveryFuture) -> None:
        self.armed = False
        records, settled = self.records, self.delivery._settled
        produced = 0
        while records:
            seq, future, event = records[0]
            if not future.done():
                break
            records.popleft()
            if settled(seq, future) and event:
                produced += 1
        if produced:
            self.delivery._produced.inc(produced)
        if records and not self.armed:
            self._arm()
