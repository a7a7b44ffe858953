"""The Genesys Cloud Notifications source (``platform = "genesys-cloud"``): a ``Source``.

genesys-cloud contract. Start: the topic templates are expanded over the org's queues and users
(paged REST, or the configured lists) into L, packed into the fewest channels (at most
``max_channels``, and 20 for the streams of one OAuth client together), and each channel slot
runs its own state machine (``genesys_cloud_channel``): POST a channel, PUT the whole list,
one socket, make-before-break, rollover, new channels when one is gone or taken. Records go to
``Delivery`` as they arrive; what no socket heard is a *gap* (``policy.gc_coverage``), reported
(``stream.gap``), kept in the cursor (``open_gaps``) and backfilled from the analytics API
(``genesys_cloud_backfill``). The cursor is ``{"watermark", "open_gaps", "channels"}``; start with
a cursor makes the down time since its watermark the first gap.

Decisions are the pure policies' (``gc_topics``, ``gc_channel``, ``gc_coverage``, ``gc_records``);
this module wires them, keeps the stream's status and reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ccstream import metrics
from ccstream.config import ConnectorSettings, GenesysCloudStream, MaintenanceWindow
from ccstream.logs import BoundLogger
from ccstream.timefmt import parse_rfc3339, rfc3339
from connectors.kafka.cursor_store import StoredCursor
from connectors.kafka.delivery import Delivery, safe_error
from connectors.policy import gc_topics, intervals, lifecycle
from connectors.policy.breaker import BreakerState
from connectors.policy.gc_channel import ChannelState
from connectors.policy.gc_coverage import Coverage, Gap, GapBook, ReceiptProgress
from connectors.policy.maintenance import Calendar
from connectors.sources.base import CursorBody, SourceDeps, SourceStatus
from connectors.sources.genesys_cloud_backfill import Backfiller
from connectors.sources.genesys_cloud_channel import ChannelSlot
from connectors.sources.genesys_cloud_rest import (
    QUEUES,
    USERS,
    GcFatalError,
    GcRest,
    StoppedError,
    shared_client,
    tls_context,
)
from connectors.sources.observer import StreamObserver
from connectors.sources.stopping import Stopping

SOCKETED = (ChannelState.OPEN, ChannelState.SWITCHING)


class GenesysCloudSource:
    def __init__(self, stream: GenesysCloudStream, settings: ConnectorSettings,
                 deps: SourceDeps, stored: StoredCursor | None = None, *,
                 maintenance: Sequence[MaintenanceWindow] = ()) -> None:
        self.stream = stream
        self.calendar = Calendar(maintenance)
        self.settings = settings
        self.deps = deps
        self.observe = StreamObserver(stream.name, stream.platform)
        self.log: BoundLogger = self.observe.log
        self.status: SourceStatus = SourceStatus.STARTING
        self.fatal: str | None = None
        self.stopping = Stopping()
        self.tls = tls_context(stream, self.log)
        self.client = shared_client(stream, settings, deps, self.tls, self.log)
        self.rest = GcRest(stream, settings, deps, client=self.client, stopping=self.stopping,
                           log=self.log, context=self.tls, calendar=self.calendar,
                           on_wait=self.slot_changed)
        self.progress = ReceiptProgress()
        self.delivery = Delivery(stream, deps.sink, self.progress, deps.wall, log=self.log,
                                 on_failure=lambda: None)  # the watermark holds (§6)
        body = stored.body if stored is not None else {}
        self._stored_watermark = parse_rfc3339(body.get("watermark"))
        self.book = GapBook(intervals.from_json(body.get("open_gaps")) if stream.backfill
                            else ())
        self._coverage: Coverage | None = None
        self.slots: list[ChannelSlot] = []
        self.backfiller: Backfiller | None = None
        self._reported: set[str] = set()          # Rejected topics reported (once, §3)
        self._subscriptions: dict[int, tuple[int, int]] = {}
        for state in ("Permitted", "Rejected"):
            metrics.SUBSCRIPTIONS.labels(stream.name, state).set(0)
        metrics.CHANNELS_OPEN.labels(stream.name).set(0)
        metrics.GAP_SECONDS.labels(stream.name)

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def platform(self) -> str:
        return self.stream.platform

    @property
    def coverage(self) -> Coverage:
        assert self._coverage is not None, "coverage exists once the channels are planned"
        return self._coverage

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop reading; close every socket with 1000 "Graceful shutdown" (§5)."""
        self.stopping.set()
        for slot in self.slots:
            slot.close_all("Graceful shutdown")

    async def run(self) -> None:
        self._set(SourceStatus.CONNECTING)
        try:
            plan, kinds = await self._plan()
            self._coverage = Coverage(len(plan), self._stored_watermark)
            self.slots = [ChannelSlot(self, i, ids) for i, ids in enumerate(plan)]
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(slot.run(), name=f"gc:{self.name}:{slot.index}")
                     for slot in self.slots]
            if self.stream.backfill and kinds:
                self.backfiller = Backfiller(self, kinds)
                tasks.append(loop.create_task(self.backfiller.run()))
            await self._supervise(tasks)
        except GcFatalError as err:
            self._fail(str(err))
        except StoppedError:
            pass
        except Exception as err:  # noqa: BLE001 (one stream's defect must not stop the others)
            self.log.error("stream.internal_error", error=safe_error(err))
            self._fail(f"stream {self.name}: internal error: {safe_error(err)}")
        finally:
            if self.status is not SourceStatus.FAILED:
                self._set(SourceStatus.STOPPED)
            metrics.CHANNELS_OPEN.labels(self.name).set(0)

    async def _supervise(self, tasks: list[asyncio.Task[None]]) -> None:
        """Every slot and the backfill run until stopped; the first to fail fails them all."""
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
        if failed is not None:
            self.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        if failed is not None:
            raise failed

    async def _plan(self) -> tuple[list[tuple[str, ...]], tuple[str, ...]]:
        """L and its channels (§4), and what backfill queries (§7); refuses start with one line
        when a template is wrong or the channels do not fit."""
        stream = self.stream
        try:
            templates = gc_topics.parse_templates(stream.name, stream.topics)
            need = gc_topics.needs(templates)
            queues = await self._ids(stream.queues, "queue" in need, QUEUES)
            users = await self._ids(stream.users, "user" in need, USERS)
            ids = gc_topics.expand(stream.name, templates, queues, users)
            plan = gc_topics.pack(stream.name, ids, stream.max_channels)
        except gc_topics.TopicError as err:
            raise GcFatalError(str(err)) from None
        over = self.client.budget.claim(stream.name, len(plan))
        if over is not None:
            raise GcFatalError(
                f"stream {stream.name}: the streams of client {stream.client_id} at "
                f"{stream.login()} together need {over} channels, at most "
                f"{gc_topics.CLIENT_CHANNELS} are allowed")
        return plan, gc_topics.backfill_kinds(ids)

    async def _ids(self, given: tuple[str, ...] | None, needed: bool, path: str) -> list[str]:
        if given is not None:
            return list(given)  # §1: exactly these ids, no listing
        return await self.rest.list_ids(path) if needed else []

    # -- what slots report -----------------------------------------------------------------------
    def report(self, gap: Gap | None) -> None:
        """A gap closed (§6): logged, counted, kept for backfill; never hidden."""
        if gap is None:
            return
        self.log.error("stream.gap", **gap.describe())
        metrics.GAPS.labels(self.name).inc()
        metrics.GAP_SECONDS.labels(self.name).inc(gap.seconds)
        if self.stream.backfill:
            self.book.add(gap.interval)
            if self.backfiller is not None:
                self.backfiller.wake.set()

    def subscribed(self, slot: int, channel_id: str, body: Any, received: float) -> None:
        """A PUT answered 200 (§3): Permitted / Rejected per topic, each rejection reported once;
        every topic rejected fails the stream."""
        entities = body.get("entities") if isinstance(body, dict) else None
        states = {e["id"]: e for e in entities or [] if isinstance(e, dict)
                  and isinstance(e.get("id"), str)}
        ids = self.slots[slot].ids
        permitted = [t for t in ids if states.get(t, {}).get("state") == "Permitted"]
        rejected = [t for t in ids if t not in permitted]
        fresh = [t for t in rejected if t not in self._reported]
        self._reported.update(fresh)
        self.log.info("channel.subscribed", channel_id=channel_id, topics=len(ids),
                      permitted=len(permitted), rejected=[_rejection(t, states.get(t))
                                                          for t in fresh])
        self._subscriptions[slot] = (len(permitted), len(rejected))
        for state, column in (("Permitted", 0), ("Rejected", 1)):
            metrics.SUBSCRIPTIONS.labels(self.name, state).set(
                sum(counts[column] for counts in self._subscriptions.values()))
        self.report(self.coverage.required(slot, bool(permitted), received))
        if len(self._subscriptions) == len(self.slots) and not any(
                counts[0] for counts in self._subscriptions.values()):
            raise GcFatalError(f"stream {self.name}: every topic was rejected: "
                               f"{', '.join(sorted(self._reported)[:5])}")

    def slot_changed(self) -> None:
        """The stream's status from its slots' (the lifecycle table's order kept)."""
        slots = self.slots
        metrics.CHANNELS_OPEN.labels(self.name).set(sum(1 for s in slots if s.open_socket))
        if self.status in (SourceStatus.STOPPED, SourceStatus.FAILED) or self.stopping.is_set():
            return
        if any(s.policy.breaker.state is BreakerState.OPEN for s in slots):
            target = SourceStatus.OPEN
        elif slots and all(s.state in SOCKETED for s in slots):
            target = SourceStatus.STREAMING
        elif any(s.waiting_out for s in slots) or self.rest.waiting_out:
            target = SourceStatus.MAINTENANCE
        elif any(s.state is ChannelState.WAITING for s in slots):
            target = SourceStatus.WAITING
        else:
            target = SourceStatus.CONNECTING
        self._set(target)

    # -- the cursor ------------------------------------------------------------------------------
    def checkpoint(self, now: float) -> CursorBody | None:
        """``{"watermark", "open_gaps", "channels"}`` as §6 allows (None: nothing known yet)."""
        if self._coverage is None:
            watermark = self._stored_watermark
        else:
            watermark = self._coverage.watermark(self.progress.oldest_pending())
        if watermark is None:
            return None
        gaps = intervals.merge(self.book.open_gaps()) if self.stream.backfill else []
        channels = [{"id": s.channel.id, "expires": s.channel.expires} for s in self.slots
                    if s.channel is not None]
        return {"watermark": rfc3339(watermark), "open_gaps": intervals.to_json(gaps),
                "channels": channels}

    def committed(self, body: CursorBody, now: float) -> None:
        """Nothing to do: the body is already what acknowledgements made safe."""

    # -- helpers -------------------------------------------------------------------------------
    def _fail(self, line: str) -> None:
        self.fatal = line
        self.client.budget.release(self.name)
        self.observe.failed("fatal", line)
        self._set(SourceStatus.FAILED)

    def _set(self, status: SourceStatus) -> None:
        if status is self.status:
            return
        for step in _route(self.status, status):
            self.status = lifecycle.transition(self.status, step)
            self.deps.on_change(self)


def _route(current: SourceStatus, target: SourceStatus) -> list[SourceStatus]:
    """The shortest walk of the lifecycle table from ``current`` to ``target`` (slots change
    independently, so the stream's status may jump, e.g. OPEN -> STREAMING via CONNECTING)."""
    allowed = lifecycle.TRANSITIONS
    if target in allowed[current]:
        return [target]
    for middle in (SourceStatus.WAITING, SourceStatus.CONNECTING):
        if middle in allowed[current] and target in allowed[middle]:
            return [middle, target]
    return []


def _rejection(topic: str, entity: dict[str, Any] | None) -> dict[str, Any]:
    entity = entity or {}
    return {"id": topic, "reason": entity.get("rejectionReason") or
            ("absent from the answer" if not entity else None),
            "missing": entity.get("missingPermissions")}
