"""One stream's session loop: connect, pump frames into Kafka, decide, wait, connect again.

The loop owns every attempt (one ``connect()`` each, URL built fresh: token, resume point,
types) and carries out the decisions of the pure policies: ``close_codes`` says what an ending
means, ``ReconnectPolicy`` how long to wait and whether the breaker opens, ``KeepAlive`` when the
connection is dead, ``Progress`` where to resume. It never raises for a platform or Kafka
failure: it reconnects, or, for a non-retriable answer (403, ``invalid_client``), stops *this*
stream with a clear error (``fatal``) and nothing else.

Before every attempt: the token is checked (and refreshed if due, single-flight), sends still in
flight are given ``close_timeout_s`` to settle, and ``Progress.rewind()`` pins the resume point,
so whatever Kafka has not acknowledged is replayed by the platform.

Kafka failures (``delivery``): the stream stops reading, closes its socket with 1000, and connects
again only once Kafka has taken what was in flight (``kafka.waiting`` / ``kafka.recovered``), so
an outage costs one reconnect per stream, not one per backoff delay. Gaps (``gaps``): checked
before each attempt (age) and on the first event of each connection (replay). Frames over the
hard cap (1009): the next attempt reads with a raised cap (``wire``), once.

Endpoints (``regions``): each attempt goes to the endpoint ``policy.failover`` chose, with that
endpoint's token and proxy route and the stream's one resume point; on a secondary the primary is
probed and the stream fails back (the socket closed with 1000 first, docs/operations.md).
Maintenance windows (``policy.maintenance``): a stream that drops inside one reports
``maintenance`` and waits for one jittered probe per interval, never counting towards its breaker
or a failover; outside every window nothing changes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ccstream.config import ConnectorSettings, MaintenanceWindow, StreamConfig
from ccstream.logs import BoundLogger
from ccstream.timefmt import rfc3339
from connectors.kafka.cursor_store import StoredCursor
from connectors.kafka.delivery import Delivery, safe_error
from connectors.platforms import Frame, FrameKind, adapter_for
from connectors.policy import close_codes, lifecycle
from connectors.policy.backoff import Backoff
from connectors.policy.breaker import Breaker, BreakerState
from connectors.policy.close_codes import Action, Disposition
from connectors.policy.gaps import Gap, GapWatch
from connectors.policy.keepalive import KeepAlive
from connectors.policy.maintenance import Calendar, Open, probe_delay
from connectors.policy.retry import Plan, ReconnectPolicy, RetryWindow
from connectors.policy.session import (
    TLS_HINT,
    ConnectionState,
    Ending,
    ending_disposition,
    token_disposition,
)
from connectors.sources.base import CursorBody, SourceDeps, SourceStatus, TokenSource
from connectors.sources.observer import StreamObserver
from connectors.sources.regions import Regions
from connectors.sources.stopping import Stopping
from connectors.sources.wire import (
    HARD_CAP_FACTOR,
    RAISED_CAP_FACTOR,
    TypedConnection,
    drive_keepalive,
    open_connection,
    tls_context,
)
from connectors.tokens import TokenError


class WebSocketSource:
    """One resumable WebSocket stream of the integration guide's flavours (a ``Source``)."""

    def __init__(self, stream: StreamConfig, settings: ConnectorSettings, deps: SourceDeps,
                 stored: StoredCursor | None = None, tokens: TokenSource | None = None, *,
                 maintenance: Sequence[MaintenanceWindow] = ()) -> None:
        self.stream = stream
        self.settings = settings
        self.deps = deps
        self.adapter = adapter_for(stream.platform)
        self.observe = StreamObserver(stream.name, stream.platform)
        self.log: BoundLogger = self.observe.log
        self.regions = Regions(stream, settings, deps, self.log, tokens)
        self.calendar = Calendar(maintenance)
        self.policy = ReconnectPolicy(
            Backoff(settings.backoff_base_s, settings.backoff_max_s, settings.jitter, deps.rand,
                    settings.deployment_offset_s),
            RetryWindow(settings.retry_window_s), Breaker(settings.breaker_cooldown_s),
            settings.max_attempts, settings.max_auth_failures,
        )
        resume = stored.value if stored is not None else None
        self.progress = self.adapter.progress(resume, settings.since_lateness_s)
        seen = stored.updated_epoch() if stored is not None else None
        self.ping_interval_s = stream.ping_interval_s or self.adapter.ping_interval_s
        self.retention_s = stream.retention_s or self.adapter.retention_s
        self.gaps = GapWatch(resume, seen or deps.wall(), self.retention_s,
                             settings.since_lateness_s, self.adapter.resume_epoch)
        self.delivery = Delivery(stream, deps.sink, self.progress, deps.wall, log=self.log,
                                 on_failure=self._on_kafka_failure)
        self._tls = tls_context(stream, self.log)
        self.status: SourceStatus = SourceStatus.STARTING
        self.fatal: str | None = None
        self._stopping = Stopping()
        self._ws: TypedConnection | None = None
        self._closer: asyncio.Task[None] | None = None
        # sockets left behind by a planned reconnect, still finishing their close handshake
        self._retiring: set[asyncio.Task[None]] = set()
        self._conn = ConnectionState()  # the facts of the open connection
        # across connections: Kafka failed and has not taken what was in flight yet (the next
        # attempt waits for it); the last connection closed on a frame over the hard cap
        self._kafka_down = False
        self._over_cap = False
        self._failing_back = False  # the probe task closed this socket to fail back
        self._prober: asyncio.Task[None] | None = None
        self.connections = 0
        wall, delivery = self.deps.wall, self.delivery
        self.observe.event_age(lambda: wall() - delivery.last_event)

    @property
    def name(self) -> str:
        return self.stream.name

    @property
    def tokens(self) -> TokenSource:
        """The token source of the endpoint the next attempt uses."""
        return self.regions.tokens

    @property
    def platform(self) -> str:
        return self.stream.platform

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop reading; close the open socket with 1000 "Graceful shutdown" (docs/protocols.md
        §4)."""
        self._stopping.set()
        ws = self._ws
        if ws is not None and self._closer is None:
            self._closer = asyncio.get_running_loop().create_task(
                ws.close(1000, "Graceful shutdown"))

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not await self._wait_until_allowed():
                    break
                disposition = await self._attempt_safely()
                if disposition.action is Action.STOP:
                    break
                if disposition.action is Action.FATAL:
                    self._fail(disposition)
                    return
                await self._after(disposition)
        finally:
            if self._retiring:
                await asyncio.wait(self._retiring, timeout=self.settings.close_timeout_s)
            if self.status is not SourceStatus.FAILED:
                self._set(SourceStatus.STOPPED)
            self.observe.backoff_over()

    def checkpoint(self, now: float) -> CursorBody | None:
        """``{"since": T}`` or ``{"cursor": C}``: the replay point over the acknowledged prefix."""
        point = self.progress.resume_point()
        self.gaps.note_resume(point, now)  # the age of a resume point counts from here (gaps)
        return None if point is None else {self.adapter.resume_param: point}

    def committed(self, body: CursorBody, now: float) -> None:
        """Nothing to do: the platform replays from any committed point."""

    # -- one attempt ---------------------------------------------------------------------------
    async def _wait_until_allowed(self) -> bool:
        while (wait := self.policy.ready(self.deps.clock())) > 0:
            if not await self._stopping.sleep(wait):
                return False
        if self.policy.breaker.state is BreakerState.HALF_OPEN:
            self.observe.half_open()
        wait = self.deps.limiter.reserve(self.deps.clock())
        if wait > 0:
            self.observe.rate_limited(wait)
            return await self._stopping.sleep(wait)
        return not self._stopping.is_set()

    async def _attempt_safely(self) -> Disposition:
        try:
            return await self._attempt()
        except Exception as err:  # noqa: BLE001 (one stream's defect must not stop the others)
            self.log.error("stream.internal_error", error=safe_error(err))
            return Disposition(Action.RECONNECT, "internal_error")

    async def _attempt(self) -> Disposition:  # noqa: PLR0911 (each outcome is one return)
        self._set(SourceStatus.CONNECTING)
        try:
            token = await self._stopping.race(self.tokens.get())
        except TokenError as err:
            if err.retriable:
                self.observe.token_failed(err.status, err.error, err.retry_after_s)
            return token_disposition(self.stream.name, err.status, err.error, err.retriable,
                                     err.retry_after_s)
        if token is None or (self._kafka_down and not await self._wait_for_kafka()):
            return close_codes.stop()
        # sends still in flight get a bounded time, so the resume point replays less
        await self.delivery.settle(self.settings.close_timeout_s)
        anchor = self.progress.replay_anchor()
        resume = self.progress.rewind()
        self._report_gap(self.gaps.connecting(resume, anchor, self.deps.wall()))
        url = self.adapter.url(self.regions.url, token, resume, self.stream.types)
        try:
            ws = await self._stopping.race(open_connection(
                url, max_frame_bytes=self.settings.max_frame_bytes,
                open_timeout_s=self.settings.open_timeout_s,
                close_timeout_s=self.settings.close_timeout_s, context=self._tls,
                cap_factor=self._next_cap(), proxy=self.regions.route))
        except InvalidStatus as err:
            return self._rejected(err, token)
        except ssl.SSLCertVerificationError as err:
            # not retriable: the same certificate fails the same way on every attempt
            return Disposition(Action.FATAL, "tls_verify_failed", detail=(
                f"stream {self.stream.name}: the server's certificate was not verified "
                f"({err.verify_message}): {TLS_HINT}"))
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            self.observe.connect_failed(safe_error(err))
            return close_codes.connect_error()
        if ws is None:
            return close_codes.stop()
        return await self._connected(ws, token, resume)

    def _rejected(self, err: InvalidStatus, token: str) -> Disposition:
        status = err.response.status_code
        headers = dict(err.response.headers.raw_items())
        disposition = close_codes.classify_handshake(status, headers)
        if disposition.auth:
            self.tokens.invalidate(token)
        self.observe.handshake_rejected(status, disposition)
        if disposition.action is Action.FATAL:
            return Disposition(Action.FATAL, disposition.cause,
                               detail=f"stream {self.stream.name}: {disposition.detail}")
        return disposition

    async def _connected(self, ws: TypedConnection, token: str, resume: str | None
                         ) -> Disposition:
        self._ws = ws
        self.connections += 1
        self.observe.connected(resume, self.connections)
        if self._stopping.is_set():
            self.stop()  # a stop that arrived during the handshake: close what just opened
        try:
            return await self._pump(ws, token)
        finally:
            closer = self._closer
            if closer is not None and closer in self._retiring:
                pass  # a planned reconnect does not wait for the old socket's close handshake
            elif closer is not None:
                await asyncio.gather(closer, return_exceptions=True)
            else:
                await ws.close()
            self._ws = None
            self._closer = None
            self.observe.disconnected()

    # -- the open connection ---------------------------------------------------------------------
    async def _pump(self, ws: TypedConnection, token: str) -> Disposition:
        clock = self.deps.clock
        keepalive = KeepAlive(self.ping_interval_s, self.settings.pong_timeout_s, clock())
        self._conn = ConnectionState()
        self._failing_back = False
        keeper = asyncio.get_running_loop().create_task(
            drive_keepalive(ws, keepalive, clock, self._mark_dead, self.log))
        # the per-frame path, looked up once per connection (it runs for every event)
        parse, max_bytes = self.adapter.parse, self.settings.max_frame_bytes
        delivery, conn, recv = self.delivery, self._conn, ws.recv_typed
        try:
            while True:
                data, binary = await recv()
                keepalive.inbound(clock())
                frame = parse(data, binary, max_bytes)
                kind = frame.kind
                if kind is FrameKind.EVENT:
                    if not conn.first_event_seen:
                        self._on_first_event(frame)
                    await delivery.event(frame)
                elif kind is FrameKind.CLOSING:
                    return self._closing_notice(ws)
                else:
                    await delivery.handle(frame)
                # what follows could not be delivered
                if conn.endings and conn.ended(Ending.KAFKA_FAILED):
                    return close_codes.kafka_error()
        except ConnectionClosed as err:
            return await self._closed(err, token)
        finally:
            keeper.cancel()
            prober, self._prober = self._prober, None
            if prober is not None:
                prober.cancel()
            await asyncio.gather(keeper, *([prober] if prober else []), return_exceptions=True)

    def _closing_notice(self, ws: TypedConnection) -> Disposition:
        self.log.info("ws.closing_notice")
        # the close frame goes out now; its handshake may queue behind frames the server still
        # sends, so it finishes in the background while we reconnect
        self._closer = asyncio.get_running_loop().create_task(ws.close(1000, "Planned reconnect"))
        self._retiring.add(self._closer)
        self._closer.add_done_callback(self._retiring.discard)
        return close_codes.closing_notice()

    def _on_kafka_failure(self) -> None:
        self._kafka_down = True  # the next attempt waits for Kafka first
        ws = self._ws
        if ws is not None and not self._conn.ended(Ending.KAFKA_FAILED) and self._closer is None:
            # the platform replays it after a reconnect from the acknowledged prefix
            self._conn.end(Ending.KAFKA_FAILED)
            self._closer = asyncio.get_running_loop().create_task(
                ws.close(1000, "Reconnecting"))

    def _next_cap(self) -> int:
        """The frame cap factor of this attempt: raised once after a 1009 (see ``wire``)."""
        if not self._over_cap:
            return HARD_CAP_FACTOR
        self._over_cap = False
        self.log.warning("ws.frame_cap_raised", max_size=self.settings.max_frame_bytes
                         * RAISED_CAP_FACTOR)
        return RAISED_CAP_FACTOR

    async def _wait_for_kafka(self) -> bool:
        """After a Kafka failure, connect again only once Kafka has taken what is in flight.

        aiokafka's idempotent producer never expires a batch: it retries until the broker is
        back. Reconnecting meanwhile would only have the platform replay into a producer that
        cannot deliver, reconnect after reconnect. False if stopped while waiting.
        """
        self.log.warning("kafka.waiting", in_flight=self.delivery.in_flight)
        if await self._stopping.race(self.delivery.drain()) is None:
            return False
        self._kafka_down = False
        self.log.info("kafka.recovered")
        return True

    def _on_first_event(self, frame: Frame) -> None:
        self._conn.first_event_seen = True
        self._report_gap(self.gaps.first_event(frame.epoch))
        self.observe.first_event(breaker_closed=self.policy.event())
        self._set(SourceStatus.STREAMING)
        if self.regions.streaming() and self._prober is None:
            # on a secondary: probe the primary while this connection lasts
            self._prober = asyncio.get_running_loop().create_task(
                self.regions.probe_loop(self.adapter, self._tls, self._fail_back))

    def _fail_back(self) -> None:
        """The primary answered a probe: close this socket with 1000 first; the next attempt
        goes to the primary (never two sockets carrying events at once)."""
        ws = self._ws
        if ws is not None and self._closer is None and self._conn.ending is None:
            self._failing_back = True
            self._closer = asyncio.get_running_loop().create_task(
                ws.close(1000, "Failing back"))

    def _mark_dead(self) -> None:
        self._conn.end(Ending.DEAD)

    async def _closed(self, err: ConnectionClosed, token: str) -> Disposition:
        if self._stopping.is_set():
            self._conn.end(Ending.SHUTDOWN)
        rcvd, sent = err.rcvd, err.sent
        closed = ending_disposition(self._conn, sent.code if sent else None,
                                    rcvd.code if rcvd else None, rcvd.reason if rcvd else "")
        disposition = closed.disposition
        if self._conn.ending is Ending.SHUTDOWN:
            self.observe.closed(1000, None, "shutdown")
        if self._conn.ending is not None:
            return disposition
        if self._failing_back:
            self._failing_back = False
            self.observe.closed(1000, "Failing back", "failback")
            return Disposition(Action.PLANNED, "failback")
        self._over_cap = closed.over_cap
        if closed.over_cap:
            await self.delivery.dead_letter(
                b"", "frame_over_hard_cap: websockets closed with 1009")
            rcvd = sent
        if disposition.auth:
            self.tokens.invalidate(token)  # never reuse a token after an auth close
        self.observe.closed(rcvd.code if rcvd else None, rcvd.reason if rcvd else None,
                            disposition.cause)
        return disposition

    # -- between attempts ------------------------------------------------------------------------
    async def _after(self, disposition: Disposition) -> None:
        window = (None if disposition.action is Action.PLANNED
                  else self.calendar.open_at(self.deps.wall()))
        if window is not None:
            await self._maintenance_wait(window, disposition)
            return
        if disposition.action is Action.PLANNED:
            plan = self.policy.planned()
        else:
            plan = self.policy.failure(self.deps.clock(), disposition.floor_s,
                                       auth=disposition.auth)
            self.regions.failed(breaker_opened=plan.opened, floor_s=disposition.floor_s)
        self._set(SourceStatus.OPEN if plan.opened else SourceStatus.WAITING)
        self.observe.reconnect_scheduled(disposition, plan)
        await self._stopping.sleep(plan.delay_s)
        self.observe.backoff_over()

    async def _maintenance_wait(self, window: Open, disposition: Disposition) -> None:
        """Dropped inside a declared window: one jittered probe per interval, no breaker, no
        failover (the platform said it would be away; docs/operations.md)."""
        delay = max(probe_delay(window, self.deps.wall(), self.deps.rand), disposition.floor_s)
        self._set(SourceStatus.MAINTENANCE)
        self.log.info("maintenance.waiting", until=rfc3339(window.end), probe_in_s=round(
            delay, 3), dropped=disposition.cause)
        self.observe.reconnect_scheduled(Disposition(Action.RECONNECT, "maintenance"),
                                         Plan(delay, 0, self.policy.breaker.state))
        await self._stopping.sleep(delay)
        self.observe.backoff_over()

    def _report_gap(self, gap: Gap | None) -> None:
        if gap is not None:
            self.observe.gap(gap, self.retention_s)

    # -- helpers -------------------------------------------------------------------------------
    def _fail(self, disposition: Disposition) -> None:
        self.fatal = disposition.detail or disposition.cause
        self.observe.failed(disposition.cause, self.fatal)
        self._set(SourceStatus.FAILED)

    def _set(self, status: SourceStatus) -> None:
        if status is not self.status:
            self.status = lifecycle.transition(self.status, status)
            self.deps.on_change(self)

