"""One owned slot: its transactional producer, its streams' sources, its cursor transactions.

The orders of operations are those of ``policy.slot_states`` (the table this driver moves
through). Taking a slot: start the producer of ``<group_id>.slot-<n>`` (its InitProducerId bumps
the epoch, fencing the previous holder and completing or aborting that holder's open
transaction, so no older transaction of this id can commit afterwards), read every cursor up to
the cursor topic's high watermark, build the sources, start them. Running: every
``cursor_commit_interval_s`` one transaction with the cursors that changed. Releasing: stop the
sources (close 1000), flush the shared producer, one last transaction (unless our view is
stale), stop the producer.

Every Kafka call is bounded (aiokafka's ``commit_transaction`` has no timeout of its own).
``ProducerFenced`` means another instance holds the slot: the sources stop, nothing is
committed. A timeout or another Kafka error leaves the transaction's state unknown: the producer
is re-created (its InitProducerId resolves the pending transaction), but only while the lease
holds, since that also fences whoever holds the id now.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced, TransactionalIdAuthorizationFailed

from ccstream import metrics
from ccstream.config import AnyStream, Config
from ccstream.errors import CcstreamError
from ccstream.logs import get_logger
from connectors.cluster.guard import GuardedLimiter, GuardedSink
from connectors.kafka import cursor_store
from connectors.kafka.cursor_store import CursorStoreError, CursorTail
from connectors.kafka.delivery import safe_error
from connectors.policy.slot_states import (
    CommitOutcome,
    RevokeReason,
    SlotState,
    commits_on_release,
    transition,
)
from connectors.policy.slots import transactional_id
from connectors.sources.base import CursorBody, Sink, Source, SourceStatus

if TYPE_CHECKING:  # the runner imports this package lazily: no cycle at import time
    from connectors.runner import SourceBuilder

# seconds the shared producer may take to flush at a release
FLUSH_TIMEOUT_S = 3.0
PRODUCER_STOP_TIMEOUT_S = 2.0


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class SlotFatalError(CcstreamError, RuntimeError):
    """A slot cannot be run by any instance of this configuration (a missing ACL)."""

    retriable = False
    exit_status = 1


@dataclass
class SlotContext:
    """What every slot of one instance shares."""

    config: Config
    instance: str                         # this process's client id
    sink: Sink                            # the shared event producer
    flush: Callable[[], Coroutine[Any, Any, None]]
    tail: CursorTail
    builder: SourceBuilder
    allowed: Callable[[], bool]           # the lease, one comparison
    on_denied: Callable[[], None]         # a source met an expired lease
    on_change: Callable[[Source], None]   # a source's status changed
    clock: Callable[[], float]            # monotonic
    wall: Callable[[], float]


class Slot:
    def __init__(self, ctx: SlotContext, number: int, streams: list[AnyStream]) -> None:
        self.ctx = ctx
        self.number = number
        self.streams = streams
        self.cluster = ctx.config.cluster
        self.state = SlotState.UNOWNED
        self.wanted = False             # in our current assignment
        self.producer: AIOKafkaProducer | None = None
        self.broken = False             # the producer's transaction state is unknown
        self.sources: list[Source] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.committed: dict[str, CursorBody | None] = {}
        self.fencing = asyncio.Event()  # set while no InitProducerId of ours is in flight
        self.fencing.set()
        self._op = asyncio.Lock()       # start and release never interleave
        self._txn = asyncio.Lock()      # one transaction at a time
        self._connecting: dict[str, float] = {}
        self.log = get_logger("ccstream.cluster", slot=number)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.streams]

    def move(self, new: SlotState) -> None:
        self.state = transition(self.number, self.state, new)

    # -- taking the slot -------------------------------------------------------------------------
    async def start(self, may_fence: Callable[[], bool]) -> bool:
        """ASSIGNED -> STARTING -> RUNNING; False (back to ASSIGNED, or STOPPED) on failure.

        ``may_fence`` (lease held, no rebalance under way) is asked with no await between it
        and the fence's start, so a rebalance that begins meanwhile sees the fence in flight
        (``fencing``) and waits for it."""
        async with self._op:
            if self.state is not SlotState.ASSIGNED or not self.wanted or not may_fence():
                return False
            self.move(SlotState.STARTING)
            self.log.info("slot.starting", streams=self.names)
            started = self.ctx.clock()
            if not self.streams:  # an empty slot: nothing to fence, nothing to run
                self.move(SlotState.RUNNING)
                return True
            if not await self._fence():
                return False
            fenced_s = self.ctx.clock() - started
            metrics.SLOT_TAKEOVER_SECONDS.labels("fence").observe(fenced_s)
            self.log.info("slot.fenced_previous", ms=round(fenced_s * 1000, 1))
            read_at = self.ctx.clock()
            stored = await self._read_cursors()
            if stored is None:
                return False
            read_s = self.ctx.clock() - read_at
            metrics.SLOT_TAKEOVER_SECONDS.labels("cursor").observe(read_s)
            if not self.wanted or not self.ctx.allowed():
                await self._abandon("revoked while starting")
                return False
            self._start_sources(stored)
            self.move(SlotState.RUNNING)
            for name in self.names:
                metrics.STREAM_OWNED.labels(name).set(1)
            self.log.info("slot.running", streams=self.names,
                          ms=round((self.ctx.clock() - started) * 1000, 1))
            return True

    async def _fence(self) -> bool:
        self.producer = self._new_producer()
        self.broken = False
        self.fencing.clear()
        try:
            async with asyncio.timeout(self.cluster.transaction_timeout_s):
                await self.producer.start()
        except TransactionalIdAuthorizationFailed as err:
            await self._abandon("transactional id not authorized")
            raise SlotFatalError(
                f"cluster.group_id: not authorized for transactional id "
                f"{self._tid()} (ACL: WRITE and DESCRIBE on the TransactionalId prefix "
                f"{self.cluster.group_id}.slot-): {err}") from err
        except (TimeoutError, KafkaError, OSError) as err:
            self.log.warning("slot.start_failed", step="fence", error=safe_error(err))
            await self._stop_producer()
            self.move(SlotState.ASSIGNED)
            return False
        finally:
            self.fencing.set()
        return True

    async def _read_cursors(self) -> dict[str, cursor_store.StoredCursor] | None:
        started = self.ctx.clock()
        try:
            stored, hw = await self.ctx.tail.read_to_hw(self.cluster.takeover_read_timeout_s)
        except (CursorStoreError, TimeoutError, KafkaError) as err:
            self.log.warning("slot.start_failed", step="cursor", error=safe_error(err))
            await self._stop_producer()
            self.move(SlotState.ASSIGNED)
            return None
        self.log.info("slot.cursors_read", ms=round((self.ctx.clock() - started) * 1000, 1),
                      hw=[end for _, end in sorted(hw.items())],
                      found=sorted(n for n in self.names if n in stored))
        return stored

    def _start_sources(self, stored: dict[str, cursor_store.StoredCursor]) -> None:
        ctx = self.ctx
        sink = GuardedSink(ctx.sink, ctx.allowed, ctx.on_denied)
        limiter = GuardedLimiter(ctx.builder.limiter, ctx.allowed, ctx.on_denied)
        loop = asyncio.get_running_loop()
        self.sources, self.tasks, self.committed = [], [], {}
        now = ctx.clock()
        for stream in self.streams:
            source, cursor = ctx.builder.build(stream, stored.get(stream.name), sink=sink,
                                               limiter=limiter, on_change=self._on_change)
            self.committed[stream.name] = cursor.body if cursor else None
            self.sources.append(source)
            self._connecting[stream.name] = now
            self.tasks.append(loop.create_task(source.run(), name=f"stream:{stream.name}"))

    def _on_change(self, source: Source) -> None:
        started = self._connecting.get(source.name)
        if started is not None and source.status is SourceStatus.STREAMING:
            del self._connecting[source.name]
            metrics.SLOT_TAKEOVER_SECONDS.labels("connect").observe(self.ctx.clock() - started)
        self.ctx.on_change(source)

    # -- cursor transactions ---------------------------------------------------------------------
    async def commit(self, *, timeout_s: float | None = None, force: bool = False
                     ) -> CommitOutcome:
        """One transaction with every changed cursor (``force``: every known one, to prove we
        still hold the slot: an empty transaction completes locally and proves nothing)."""
        async with self._txn:
            producer = self.producer
            if producer is None or self.broken or not self.ctx.allowed():
                return CommitOutcome.NOTHING
            now = self.ctx.wall()
            changes = self._changes(now, force)
            if not changes:
                return CommitOutcome.NOTHING
            started = self.ctx.clock()
            outcome = await self._transaction(producer, changes, now,
                                              timeout_s or self.cluster.transaction_timeout_s)
            if outcome is CommitOutcome.COMMITTED:
                metrics.CURSOR_TXN_SECONDS.observe(self.ctx.clock() - started)
                self._committed(changes, now)
            else:
                metrics.CURSOR_COMMIT_FAILURES.labels(outcome.value).inc()
                self.broken = outcome is not CommitOutcome.FENCED
            return outcome

    def _changes(self, now: float, force: bool) -> list[tuple[Source, CursorBody]]:
        changes = []
        for source in self.sources:
            body = source.checkpoint(now)
            last = self.committed.get(source.name)
            if body is None:
                body = last if force else None
            if body is not None and (force or body != last):
                changes.append((source, body))
        return changes

    async def _transaction(self, producer: AIOKafkaProducer,
                           changes: list[tuple[Source, CursorBody]], now: float,
                           timeout_s: float) -> CommitOutcome:
        topic = self.ctx.config.topics.cursors
        sent: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(timeout_s):
                await producer.begin_transaction()
                for source, body in changes:
                    value = cursor_store.encode(source.platform, body, now, self.ctx.instance)
                    sent.append(await producer.send(topic, value=value, key=source.name.encode()))
                await producer.commit_transaction()
        except ProducerFenced:
            return CommitOutcome.FENCED
        except TimeoutError:
            self.log.warning("cursor.commit_failed", error="timeout", timeout_s=timeout_s)
            return CommitOutcome.TIMEOUT
        except Exception as err:  # noqa: BLE001 (KafkaError, or the txn manager's own state checks)
            self.log.warning("cursor.commit_failed", error=safe_error(err))
            return CommitOutcome.ERROR
        finally:
            for future in sent:  # their fate is the transaction's, reported above
                future.add_done_callback(_consume)
        return CommitOutcome.COMMITTED

    def _committed(self, changes: list[tuple[Source, CursorBody]], now: float) -> None:
        for source, body in changes:
            self.committed[source.name] = body
            source.committed(body, now)
            metrics.CURSOR_COMMITS.labels(source.name).inc()
            get_logger("ccstream.connector", stream=source.name).info(
                "cursor.committed", slot=self.number, resume=cursor_store.StoredCursor(
                    source.platform, body, "").describe())

    async def reset_producer(self, may_fence: Callable[[], bool]) -> bool:
        """A new producer after a failed transaction (fences, resolves the pending txn)."""
        async with self._txn:
            if not self.broken or self.state is not SlotState.RUNNING or not may_fence():
                return False
            self.log.warning("slot.producer_reset")
            self.fencing.clear()  # from now on: a rebalance beginning meanwhile waits for us
            try:
                await self._stop_producer()
                self.producer = self._new_producer()
                async with asyncio.timeout(self.cluster.transaction_timeout_s):
                    await self.producer.start()
            except (TimeoutError, KafkaError, OSError) as err:
                self.log.warning("slot.start_failed", step="reset", error=safe_error(err))
                return False
            finally:
                self.fencing.set()
            self.broken = False
            return True

    # -- releasing the slot ----------------------------------------------------------------------
    async def release(self, reason: RevokeReason) -> str:
        """RUNNING -> REVOKING -> STOPPED; what happened to the last cursors."""
        async with self._op:
            if self.state is SlotState.ASSIGNED:
                self.move(SlotState.UNOWNED)
                return "not_started"
            if self.state is not SlotState.RUNNING:
                return "not_running"
            self.move(SlotState.REVOKING)
            for name in self.names:
                metrics.STREAM_OWNED.labels(name).set(0)
            self.log.info("slot.revoking", reason=reason.value)
            await self._stop_sources()
            result = reason.value
            if commits_on_release(reason) and self.streams:
                with contextlib.suppress(TimeoutError, KafkaError):
                    async with asyncio.timeout(FLUSH_TIMEOUT_S):
                        await self.ctx.flush()
                outcome = await self.commit(timeout_s=self.cluster.revoke_commit_timeout_s)
                result = outcome.value
                if outcome is CommitOutcome.FENCED:
                    # the new owner fenced us first: it replays from the older cursor
                    self.log.warning("slot.release_fenced")
            elif reason is RevokeReason.FENCED:
                metrics.SLOT_FENCED.inc()
                self.log.warning("slot.fenced")
            await self._stop_producer()
            self.move(SlotState.STOPPED)
            self.log.info("slot.released", result=result, reason=reason.value, cursors={
                name: cursor_store.StoredCursor("", body, "").describe()
                for name, body in self.committed.items() if body is not None})
            return result

    async def _abandon(self, why: str) -> None:
        """STARTING -> REVOKING -> STOPPED, before any source ran (nothing to commit)."""
        self.log.info("slot.revoking", reason=why)
        self.move(SlotState.REVOKING)
        await self._stop_producer()
        self.move(SlotState.STOPPED)
        self.log.info("slot.released", result="not_started", reason=why, cursors={})

    async def _stop_sources(self) -> None:
        for source in self.sources:
            source.stop()
        if self.tasks:
            # a source closes within close_timeout_s; a margin, then it is cancelled
            await asyncio.wait(self.tasks,
                               timeout=self.ctx.config.connector.close_timeout_s + 1.0)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        self._connecting.clear()

    async def _stop_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is None:
            return
        try:
            async with asyncio.timeout(PRODUCER_STOP_TIMEOUT_S):
                await producer.stop()
        except Exception as err:  # noqa: BLE001 (a fenced or broken producer may fail to stop)
            self.log.debug("slot.producer_stop_failed", error=safe_error(err))

    def _tid(self) -> str:
        return transactional_id(self.cluster.group_id, self.number)

    def _new_producer(self) -> AIOKafkaProducer:
        kafka = self.ctx.config.kafka
        return AIOKafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers,
            client_id=f"{self.ctx.instance}.slot-{self.number}",
            transactional_id=self._tid(),
            transaction_timeout_ms=int(self.cluster.transaction_timeout_s * 1000),
            acks="all", enable_idempotence=True, linger_ms=0,
            request_timeout_ms=int(kafka.request_timeout_s * 1000),
        )

    async def close(self) -> None:
        """Whatever is left after a bounded shutdown: cancelled, closed."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        await self._stop_producer()

    def running_sources(self) -> list[Source]:
        return list(self.sources) if self.state is SlotState.RUNNING else []
