"""The NICE CXone source (``platform = "cxone"``, docs/cxone.md): Real-Time Data polls + backfill.

CXone has no event socket and no cursor: a tenant is discovered (``cxone_auth``), then each
configured endpoint is polled with ``updatedSince`` by its own loop (``cxone_caller`` does one
loop's requests, ``cxone_polling`` decides), and the server's ``lastPollTime`` is that endpoint's
cursor. The pure bookkeeping lives in ``connectors.policy``: ``EndpointWatch`` (working cursor,
outages → gaps), ``PollProgress`` (§7: a cursor advances only when every row of its answer, and
of every earlier answer, is acknowledged) and ``GapLedger`` (§6: open gaps, one backfill at a
time, a gap leaves ``open_gaps`` once Kafka has all its records).

Per answer (§3, §4, §5): rows → records (``cxone_records``), bad rows → DLQ, then a cursor mark
(``lastPollTime`` verbatim; none: ``poll.no_poll_time``), then the gaps the answer closes
(``stream.gap``) go to the ledger, which the backfill loop reads from ``contacts/completed``.

Kafka failures: the loops stop polling until delivery has settled what was in flight
(``kafka.waiting`` / ``kafka.recovered``), then poll again from the acknowledged cursors and redo
the running backfill; an answer asked for before that is dropped (``generation``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Sequence
from typing import Any

import aiohttp

from ccstream.config import ConnectorSettings, CxoneStream, MaintenanceWindow
from ccstream.timefmt import rfc3339
from connectors.kafka.cursor_store import StoredCursor
from connectors.kafka.delivery import Delivery, safe_error
from connectors.platforms import Frame, FrameKind
from connectors.policy import intervals, lifecycle
from connectors.policy.cxone_ledger import (
    PAGE_SIZE,
    BackfillRun,
    CursorMark,
    GapLedger,
    GapMark,
    PollProgress,
)
from connectors.policy.cxone_polling import (
    Answered,
    EndpointWatch,
    GapReport,
    LoopView,
    PollState,
    answer_end,
    next_poll_at,
    process_down,
    route,
    stream_status,
    truncation_gap,
)
from connectors.policy.cxone_records import (
    COMPLETED,
    CONTACTS,
    RowProblem,
    read_body,
    record_of,
    server_epoch,
)
from connectors.policy.maintenance import Calendar
from connectors.sources.base import CursorBody, SourceDeps, SourceStatus
from connectors.sources.cxone_auth import CxoneAuth
from connectors.sources.cxone_caller import Caller, Got
from connectors.sources.cxone_report import CxoneReport
from connectors.sources.proxy import proxy_rules
from connectors.sources.stopping import Stopping


def shared_auth(stream: CxoneStream, settings: ConnectorSettings, deps: SourceDeps) -> CxoneAuth:
    """§1: streams of one access key share one token, discovery cache and Retry-After clock."""
    def make() -> CxoneAuth:
        assert deps.http is not None, "the CXone source needs SourceDeps.http"
        return CxoneAuth(stream, settings, deps.http, wall=deps.wall, clock=deps.clock,
                         proxies=proxy_rules(deps))

    return deps.shared.get(("cxone", stream.access_key_id), make)


def stored_endpoints(stored: StoredCursor | None, endpoints: Sequence[str]) -> dict[str, str]:
    """§7's ``endpoints``: a lastPollTime string per endpoint (others are ignored)."""
    value = stored.body.get("endpoints") if stored is not None else None
    if not isinstance(value, dict):
        return {}
    return {e: v for e, v in value.items() if e in endpoints and isinstance(v, str) and v}


class CxoneSource:
    """One CXone stream (a ``Source``)."""

    def __init__(self, stream: CxoneStream, settings: ConnectorSettings, deps: SourceDeps,
                 stored: StoredCursor | None = None, *, auth: CxoneAuth | None = None,
                 maintenance: Sequence[MaintenanceWindow] = ()) -> None:
        self.stream = stream
        self.calendar = Calendar(maintenance)
        self.settings = settings
        self.deps = deps
        self.report = CxoneReport(stream.name, stream.endpoints)
        self.log = self.report.log
        self.auth = auth if auth is not None else shared_auth(stream, settings, deps)
        interval = stream.poll_interval_s
        cursors = stored_endpoints(stored, stream.endpoints)
        self.ledger = GapLedger(
            intervals.from_json(stored.body.get("open_gaps") if stored else None),
            keep=stream.backfill and CONTACTS in stream.endpoints, settle_s=stream.settle_s)
        self.progress = PollProgress(cursors, on_gap_done=self._gap_done)
        down = process_down(stored.updated_epoch() if stored else None, deps.wall(), interval)
        started = deps.clock()
        self.watches: dict[str, EndpointWatch] = {
            e: EndpointWatch(e, interval, cursors.get(e), started=started, down=down)
            for e in stream.endpoints}
        self.delivery = Delivery(stream, deps.sink, self.progress, deps.wall, log=self.log,
                                 on_failure=self._on_kafka_failure)
        self.callers: dict[str, Caller] = {e: Caller(self, e, e) for e in stream.endpoints}
        self.backfiller = Caller(self, COMPLETED, None)
        self.status: SourceStatus = SourceStatus.STARTING
        self.fatal: str | None = None
        self.stopping = Stopping()
        self.generation = 0
        self._kafka_down = False
        self._recovery: asyncio.Task[bool] | None = None
        self._offset = 0.0             # server clock - our wall clock, from the last lastPollTime
        self._discoveries = 0          # auth.generation last logged
        self._base: str | None = None
        self._wake = asyncio.Event()   # a gap was added or finished: the backfill loop looks
        self._polled = False           # an answer came: a cursor is worth writing, even empty

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def platform(self) -> str:
        return self.stream.platform

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self.deps.http is not None
        return self.deps.http

    def _path(self, endpoint: str) -> str:
        return f"/incontactapi/services/{self.stream.api_version}/{endpoint}"

    # -- the Source interface ------------------------------------------------------------------
    def stop(self) -> None:
        """Stop polling: requests in flight are cancelled (their connections closed)."""
        self.stopping.set()

    async def run(self) -> None:
        self._set(SourceStatus.CONNECTING)
        loops = [self._guarded(self._poll_loop(e), e) for e in self.stream.endpoints]
        if self.ledger.keep:
            loops.append(self._guarded(self._backfill_loop(), COMPLETED))
        try:
            await asyncio.gather(*loops)
        finally:
            if self._recovery is not None:
                self._recovery.cancel()
            running = self.ledger.running
            # cut short by shutdown: redone in full (§6); one fully read stays, so that the
            # acknowledgements the runner's flush brings can still take its gap out
            if running is not None and not running.read:
                self.report.backfill_abandoned(running, "stopped")
                self.ledger.abandon()
            if self.status is not SourceStatus.FAILED:
                self._set(SourceStatus.STOPPED)

    def checkpoint(self, now: float) -> CursorBody | None:
        """§7: ``{"endpoints": {...}, "open_gaps": [...]}`` over what Kafka acknowledged."""
        cursors = {e: self.progress.cursors[e] for e in self.stream.endpoints
                   if e in self.progress.cursors}
        gaps = intervals.to_json(self.ledger.open)
        # once the server has answered, a cursor is written even without endpoints or gaps: a
        # run killed before its first acknowledgement then still leaves an updated_at, so the
        # next one knows it was down (§5) and reports a gap for each endpoint without a cursor
        if not cursors and not gaps and not self._polled:
            return None
        return {"endpoints": cursors, "open_gaps": gaps}

    def committed(self, body: CursorBody, now: float) -> None:
        """Nothing to do: the server answers any committed ``updatedSince`` again."""

    # -- what the callers ask of the source ----------------------------------------------------
    def fail(self, line: str) -> None:
        if self.fatal is None:
            self.fatal = line
            self.report.failed(line)
            self._set(SourceStatus.FAILED)
        self.stopping.set()

    def seen_discovery(self) -> None:
        """Log each discovery once per stream (``discovery.done``; a new base: ``changed``)."""
        api = self.auth.api
        if api is None or self.auth.generation == self._discoveries:
            return
        self._discoveries = self.auth.generation
        self.report.discovered(api[0], api[1], self._base)
        self._base = api[0]

    def loop_changed(self) -> None:
        if self.fatal is not None or self.stopping.is_set():
            return
        self._set(stream_status(LoopView(c.state, c.healthy) for c in self.callers.values()))

    async def dead_letter(self, raw: bytes, reason: str) -> None:
        await self.delivery.dead_letter(raw, reason)

    # -- the poll loops (§3) ---------------------------------------------------------------------
    async def _guarded(self, loop: Coroutine[Any, Any, None], what: str) -> None:
        """A defect in one loop is logged and fails the stream: nothing stops silently."""
        try:
            await loop
        except Exception as err:  # noqa: BLE001 (one stream's defect must not stop the others)
            self.log.error("stream.internal_error", loop=what, error=safe_error(err))
            self.fail(f"stream {self.name}: internal error in the {what} loop: "
                      f"{safe_error(err)}")

    async def _poll_loop(self, endpoint: str) -> None:
        caller, watch = self.callers[endpoint], self.watches[endpoint]
        clock, interval = self.deps.clock, self.stream.poll_interval_s
        next_at = clock()
        while await self.stopping.sleep(next_at - clock()) and await self._kafka_ready():
            got = await caller.fetch(self._path(endpoint),
                                     lambda: {"updatedSince": watch.since(self.deps.wall())},
                                     lambda a: read_body(endpoint, a.body).problem)
            if got is None:
                break
            if got.generation == self.generation:
                await self._answered(endpoint, got)
                next_at = next_poll_at(got.sent, got.received, interval)
            else:
                next_at = clock()  # asked for before a rewind: ask again from the cursor
        if caller.state is not PollState.FAILED:
            caller.go(PollState.FAILED if self.fatal else PollState.STOPPED)

    async def _answered(self, endpoint: str, got: Got) -> None:
        answer, watch, wall = got.answer, self.watches[endpoint], self.deps.wall()
        self._polled = True
        u, poll_time, truncated = got.query["updatedSince"], None, False
        if answer.status == 200:
            page = read_body(endpoint, answer.body)
            poll_time = page.poll_time
            self._observe_server(poll_time, wall)
            await self._hand(endpoint, page.rows, poll_time)
            self.report.polled(endpoint, "ok", len(page.rows))
            truncated = answer.headers.get("x-data-truncated", "").lower() == "true"
            if truncated:
                self.report.truncated(endpoint, u, poll_time)
            if poll_time is None:
                self.report.no_poll_time(endpoint, len(page.rows))
        else:
            self.report.polled(endpoint, "not_modified" if answer.status == 304 else "ok")
        end = answer_end(poll_time, answer.date, wall + self._offset)
        answered = Answered(got.sent, got.received, u, end, poll_time, truncated,
                            unchanged=answer.status == 304)
        if got.generation != self.generation:
            # Kafka failed while the rows were handed on: the rewind asks again, but what a
            # truncated answer cut off is not served again
            if (gap := truncation_gap(endpoint, answered)) is not None:
                self._gap(gap)
            return
        if poll_time is not None:
            self.progress.mark(CursorMark(endpoint, poll_time))
        for gap in watch.answered(answered):
            self._gap(gap)

    async def _hand(self, source: str, rows: Sequence[Any], poll_time: str | None,
                    gap: str | None = None, seen: set[str] | None = None) -> int:
        """Rows → records (§4); bad rows → DLQ. How many records were handed on."""
        handed = 0
        for row in rows:
            record = record_of(source, row, poll_time)
            if isinstance(record, RowProblem):
                await self.delivery.dead_letter(record.raw, record.reason)
                continue
            if seen is not None:
                if record.dedup_key in seen:
                    continue  # §6: shifted pages repeat rows; one record per run is enough
                seen.add(record.dedup_key)
            await self.delivery.event(Frame(
                FrameKind.EVENT, record.raw, correlation_id=record.correlation_id,
                dedup_key=record.dedup_key, origin="live" if gap is None else "backfill",
                gap=gap))
            handed += 1
        return handed

    def _observe_server(self, poll_time: str | None, wall: float) -> None:
        epoch = server_epoch(poll_time) if poll_time is not None else None
        if epoch is not None:
            self._offset = epoch - wall

    def _gap(self, gap: GapReport) -> None:
        self.report.gap(gap)
        self.ledger.add((gap.start, gap.end))
        self._wake.set()

    # -- backfill (§6) ---------------------------------------------------------------------------
    async def _backfill_loop(self) -> None:
        interval = self.stream.poll_interval_s
        while not self.stopping.is_set() and await self._kafka_ready():
            self._wake.clear()
            wait = self.ledger.wait(self.deps.wall() + self._offset)
            if wait is None or wait > 0:
                # new gaps and finished runs wake it; the settle time passes on its own
                await self._nap(min(interval if wait is None else wait, interval))
                continue
            run = self.ledger.start(self.deps.clock())
            self.report.backfill_started(run)
            if not await self._backfill(run) and self.ledger.running is run:
                self.report.backfill_abandoned(run, "stopped" if self.stopping.is_set()
                                               else "kafka")
                self.ledger.abandon()

    async def _nap(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await self.stopping.race(asyncio.wait_for(self._wake.wait(), seconds))

    async def _backfill(self, run: BackfillRun) -> bool:
        """Every page of ``run``'s gap handed on, then its mark; False when cut short."""
        generation, label = self.generation, intervals.label(run.gap)
        window = {"startDate": rfc3339(run.gap[0]), "endDate": rfc3339(run.gap[1]),
                  "top": str(PAGE_SIZE)}
        while True:
            got = await self.backfiller.fetch(
                self._path(COMPLETED), lambda: {**window, "skip": str(run.skip)},
                lambda a: read_body(COMPLETED, a.body).problem)
            if got is None or self.generation != generation:
                return False
            rows = read_body(COMPLETED, got.answer.body).rows if got.answer.status == 200 else ()
            handed = await self._hand(COMPLETED, rows, None, gap=label, seen=run.seen)
            run.records += handed
            self.report.backfill_records(handed)
            if self.generation != generation:
                return False
            if run.page(len(rows)):  # a short page (a 204 is an empty one) ends the gap
                break
        self.progress.mark(GapMark(run.number))  # the gap leaves open_gaps once this is acked
        return True

    def _gap_done(self, number: int) -> None:
        run = self.ledger.finish(number)
        if run is not None:
            self.report.backfill_done(run, self.deps.clock() - run.started)
            self._wake.set()

    # -- Kafka failures ------------------------------------------------------------------------
    def _on_kafka_failure(self) -> None:
        self._kafka_down = True  # the loops poll again only once Kafka took what was in flight

    async def _kafka_ready(self) -> bool:
        if not self._kafka_down:
            return True
        if self._recovery is None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())
        return await self.stopping.race(asyncio.shield(self._recovery)) is not None

    async def _recover(self) -> bool:
        self.log.warning("kafka.waiting", in_flight=self.delivery.in_flight)
        await self.delivery.drain()
        self.progress.rewind()
        self.generation += 1
        for endpoint, watch in self.watches.items():
            watch.rewind(self.progress.cursors.get(endpoint))
        if self.ledger.running is not None:
            self.report.backfill_abandoned(self.ledger.running, "kafka")
            self.ledger.abandon()
        self._kafka_down = False
        self._recovery = None
        self._wake.set()
        self.log.info("kafka.recovered")
        return True

    # -- helpers -------------------------------------------------------------------------------
    def _set(self, status: SourceStatus) -> None:
        for step in route(self.status, status):
            self.status = lifecycle.transition(self.status, step)
            self.deps.on_change(self)
