"""Backfill of a Genesys Cloud stream's gaps from the analytics details queries.

genesys-cloud contract §7. What no socket heard is gone from the Notifications API; the vendor's
advice is the analytics API, and the source follows it: each gap, once ``to + settle_s`` has
passed (activity shows up there up to ``settle_s / 2`` late), oldest first, one at a time:

* conversations (if L holds a topic other than user presence/routingStatus) and/or users (if it
  holds one of those): ``POST .../details/query`` with the gap's interval, pages of 100 from page
  1 until a short page (items may be inserted between pages: they repeat, none is missed);
  a 429 waits Retry-After and asks for the same page, a 5xx backs off (``GcRest``);
* one record per conversation / ``userDetails`` entry, keyed by its id, the JSON object as value,
  ``ccstream-source: backfill`` and ``ccstream-gap: <from>/<to>``; an item without its id goes to
  the DLQ;
* the gap leaves ``open_gaps`` only once Kafka acknowledged all its records (``backfill.done``);
  a gap cut by shutdown, or whose records Kafka refused, is redone in full.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import orjson

from ccstream import metrics
from ccstream.timefmt import rfc3339
from connectors.kafka.delivery import Delivery
from connectors.platforms import Frame, FrameKind
from connectors.policy import intervals
from connectors.policy.backoff import Backoff
from connectors.policy.gc_coverage import ReceiptProgress
from connectors.policy.gc_records import BACKFILL_KINDS, Kind, backfill_record
from connectors.policy.intervals import Interval
from connectors.sources.genesys_cloud_rest import PAGE_SIZE, GcFatalError, StoppedError

if TYPE_CHECKING:
    from connectors.sources.genesys_cloud import GenesysCloudSource

IDLE_MAX_S = 1.0    # look at the book at least this often (a wake-up also comes with each gap)


class Backfiller:
    def __init__(self, source: GenesysCloudSource, kinds: tuple[str, ...]) -> None:
        self.source = source
        self.kinds = kinds
        self.stream = source.stream
        self.book = source.book
        self.log = source.observe.log
        self.wake = asyncio.Event()
        s = source.settings
        self.backoff = Backoff(s.backoff_base_s, s.backoff_max_s, s.jitter, source.deps.rand,
                               s.deployment_offset_s)
        self._failures = 0

    async def run(self) -> None:
        try:
            while not self.source.stopping.is_set():
                now = self.source.deps.wall()
                gap = self.book.due(now, self.stream.settle_s)
                if gap is None:
                    await self._idle(now)
                    continue
                await self._fill(gap)
        except StoppedError:
            self.book.abort()  # §7: a gap cut by shutdown is redone in full

    async def _idle(self, now: float) -> None:
        due = self.book.next_due_at(self.stream.settle_s)
        delay = IDLE_MAX_S if due is None else min(IDLE_MAX_S, max(due - now, 0.01))
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await self.source.stopping.race(asyncio.wait_for(self.wake.wait(), delay))

    async def _fill(self, gap: Interval) -> None:
        self.book.start(gap)
        clock = self.source.deps.clock
        started = clock()
        label = intervals.label(gap)
        self.log.info("backfill.started", **{"from": rfc3339(gap[0]), "to": rfc3339(gap[1])},
                      kinds=list(self.kinds))
        progress = ReceiptProgress()
        delivery = Delivery(self.stream, self.source.deps.sink, progress, self.source.deps.wall,
                            log=self.log, on_failure=lambda: None)
        records = pages = 0
        counts: dict[str, int] = {}
        for kind in self.kinds:
            counts[kind], used = await self._kind(kind, label, delivery)
            records, pages = records + counts[kind], pages + used
        if await self.source.stopping.race(delivery.drain()) is None:
            raise StoppedError
        if not progress.settled():  # Kafka refused some: the whole gap again, after a backoff
            self.book.abort()
            self._failures += 1
            await self.source.stopping.sleep(self.backoff.delay(self._failures - 1))
            return
        self._failures = 0
        self.book.done()
        seconds = clock() - started
        for kind, count in counts.items():
            metrics.BACKFILL_RECORDS.labels(self.stream.name, kind).inc(count)
        metrics.BACKFILL_SECONDS.labels(self.stream.name).observe(seconds)
        self.log.info("backfill.done", **{"from": rfc3339(gap[0]), "to": rfc3339(gap[1])},
                      records=records, pages=pages, seconds=round(seconds, 3))

    async def _kind(self, kind: str, label: str, delivery: Delivery) -> tuple[int, int]:
        """Every page of one query, until a short one: (records, pages)."""
        path, listing, _, _ = BACKFILL_KINDS[kind]
        records, page = 0, 1
        while True:
            answer = await self.source.rest.request("POST", path, body=query(kind, label, page))
            if not answer.ok:  # §3: 403 elsewhere (analytics with backfill = true): fails
                raise GcFatalError(self.source.rest.line("POST", path, answer))
            doc = answer.body if isinstance(answer.body, dict) else {}
            items = doc.get(listing)
            items = items if isinstance(items, list) else []  # a missing list = empty
            for item in items:
                records += await self._record(kind, item, label, delivery)
            if len(items) < PAGE_SIZE:
                return records, page
            page += 1

    @staticmethod
    async def _record(kind: str, item: Any, label: str, delivery: Delivery) -> int:
        value = orjson.dumps(item)
        record = backfill_record(kind, item)
        if record.kind is Kind.BAD:
            await delivery.dead_letter(value, record.reason)
            return 0
        await delivery.event(Frame(FrameKind.EVENT, value, correlation_id=record.correlation_id,
                                   dedup_key=record.dedup_key, origin="backfill", gap=label))
        return 1


def query(kind: str, label: str, page: int) -> dict[str, Any]:
    """The details query of one page (§7)."""
    body: dict[str, Any] = {"interval": label,
                            "paging": {"pageSize": PAGE_SIZE, "pageNumber": page}}
    if kind == "conversations":
        body.update({"order": "asc", "orderBy": "conversationStart"})
    return body
