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
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from connectors import close_codes, metrics
from connectors.backoff import Backoff
from connectors.breaker import Breaker, BreakerState
from connectors.close_codes import Action, Disposition
from connectors.config import ConnectorSettings, StreamConfig
from connectors.cursor_store import StoredCursor
from connectors.keepalive import KeepAlive
from connectors.logs import BoundLogger, get_logger
from connectors.platforms import Frame, FrameKind, adapter_for
from connectors.platforms.genesys import parse_timestamp
from connectors.ratelimit import TokenBucket
from connectors.retry import ReconnectPolicy, RetryWindow
from connectors.sink import DeliveryFuture, KafkaSink
from connectors.tokens import TokenError, TokenManager
from connectors.wire import (
    TypedConnection,
    drive_keepalive,
    open_connection,
    redact_text,
    tls_context,
)

T = TypeVar("T")


class StreamStatus(enum.Enum):
    STARTING = "starting"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    WAITING = "waiting"
    OPEN = "open"          # breaker open
    STOPPED = "stopped"
    FAILED = "failed"      # non-retriable error


@dataclass
class SessionDeps:
    sink: KafkaSink
    tokens: TokenManager
    limiter: TokenBucket
    clock: Callable[[], float]   # monotonic: delays, keep-alive
    wall: Callable[[], float]    # epoch seconds: received-at, gaps
    rand: Callable[[], float]    # the salted random source of this stream
    on_change: Callable[[Session], None] = lambda _: None


def safe_error(err: BaseException) -> str:
    """An exception as text with any token-bearing query value cut out."""
    return redact_text(f"{type(err).__name__}: {err}")


class Session:
    def __init__(self, stream: StreamConfig, settings: ConnectorSettings, deps: SessionDeps,
                 stored: StoredCursor | None = None) -> None:
        self.stream = stream
        self.settings = settings
        self.deps = deps
        self.platform = adapter_for(stream.platform)
        self.log: BoundLogger = get_logger("ccstream.connector", stream=stream.name,
                                           platform=stream.platform)
        self.policy = ReconnectPolicy(
            Backoff(settings.backoff_base_s, settings.backoff_max_s, settings.jitter, deps.rand,
                    settings.deployment_offset_s),
            RetryWindow(settings.retry_window_s), Breaker(settings.breaker_cooldown_s),
            settings.max_attempts, settings.max_auth_failures,
        )
        resume = stored.value if stored is not None else None
        self.progress = self.platform.progress(resume, settings.since_lateness_s)
        seen = stored.updated_epoch() if stored is not None else None
        self._resume_seen: tuple[str | None, float] = (resume, seen or deps.wall())
        self._gap_reported: str | None = None
        self.ping_interval_s = stream.ping_interval_s or self.platform.ping_interval_s
        self.retention_s = stream.retention_s or self.platform.retention_s
        self._tls = tls_context(stream, self.log)
        self.status = StreamStatus.STARTING
        self.fatal: str | None = None
        self._stopping = asyncio.Event()
        self._ws: TypedConnection | None = None
        self._closer: asyncio.Task[None] | None = None
        self._pending: set[DeliveryFuture] = set()
        self._dead = False
        self._kafka_failed = False
        self._first_event = True
        self.connections = 0

    # -- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop reading; close the open socket with 1000 "Graceful shutdown" (contract §3)."""
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
            if self.status is not StreamStatus.FAILED:
                self._set(StreamStatus.STOPPED)
            metrics.BACKOFF_CURRENT.labels(self.stream.name).set(0)

    def note_resume(self, point: str | None, now: float) -> None:
        """The committer saw ``point`` as the resume point at wall time ``now`` (gap ages)."""
        if point != self._resume_seen[0]:
            self._resume_seen = (point, now)

    # -- one attempt ---------------------------------------------------------------------------
    async def _wait_until_allowed(self) -> bool:
        while (wait := self.policy.ready(self.deps.clock())) > 0:
            if not await self._sleep(wait):
                return False
        if self.policy.breaker.state is BreakerState.HALF_OPEN:
            metrics.BREAKER_STATE.labels(self.stream.name).set(1)
            self.log.info("breaker.half_open")
        wait = self.deps.limiter.reserve(self.deps.clock())
        if wait > 0:
            self.log.debug("ws.rate_limited", wait_s=round(wait, 3))
            return await self._sleep(wait)
        return not self._stopping.is_set()

    async def _attempt_safely(self) -> Disposition:
        try:
            return await self._attempt()
        except Exception as err:  # noqa: BLE001 (one stream's defect must not stop the others)
            self.log.error("stream.internal_error", error=safe_error(err))
            return Disposition(Action.RECONNECT, "internal_error")

    async def _attempt(self) -> Disposition:  # noqa: PLR0911 (each outcome is one return)
        self._set(StreamStatus.CONNECTING)
        try:
            token = await self._race(self.deps.tokens.get())
        except TokenError as err:
            if not err.retriable:
                return Disposition(Action.FATAL, "bad_credentials", detail=(
                    f"stream {self.stream.name}: the token endpoint answered {err.status} "
                    f"{err.error}: check client_id and the client secret"))
            self.log.warning("token.failed", status=err.status, error=err.error,
                             retry_after_s=err.retry_after_s)
            return Disposition(Action.RECONNECT, "token_error", err.retry_after_s)
        if token is None:
            return close_codes.stop()
        await self._settle()
        resume = self.progress.rewind()
        self._check_gap(resume)
        url = self.platform.url(self.stream.url, token, resume, self.stream.types)
        try:
            ws = await self._race(open_connection(
                url, max_frame_bytes=self.settings.max_frame_bytes,
                open_timeout_s=self.settings.open_timeout_s,
                close_timeout_s=self.settings.close_timeout_s, context=self._tls))
        except InvalidStatus as err:
            return self._rejected(err, token)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            self.log.warning("ws.connect_failed", error=safe_error(err))
            return close_codes.connect_error()
        if ws is None:
            return close_codes.stop()
        return await self._connected(ws, token, resume)

    def _rejected(self, err: InvalidStatus, token: str) -> Disposition:
        status = err.response.status_code
        headers = dict(err.response.headers.raw_items())
        disposition = close_codes.classify_handshake(status, headers)
        if disposition.auth:
            self.deps.tokens.invalidate(token)
        self.log.warning("ws.handshake_rejected", status=status, cause=disposition.cause,
                         retry_after_s=disposition.floor_s)
        if disposition.action is Action.FATAL:
            return Disposition(Action.FATAL, disposition.cause,
                               detail=f"stream {self.stream.name}: {disposition.detail}")
        return disposition

    async def _connected(self, ws: TypedConnection, token: str, resume: str | None
                         ) -> Disposition:
        self._ws = ws
        self.connections += 1
        metrics.WS_CONNECTS.labels(self.stream.name).inc()
        metrics.STREAM_CONNECTED.labels(self.stream.name).set(1)
        self.log.info("ws.connected", resume=resume, connection=self.connections)
        if self._stopping.is_set():
            self.stop()  # a stop that arrived during the handshake: close what just opened
        try:
            return await self._pump(ws, token)
        finally:
            closer = self._closer
            if closer is not None:
                await asyncio.gather(closer, return_exceptions=True)
            else:
                await ws.close()
            self._ws = None
            self._closer = None
            metrics.STREAM_CONNECTED.labels(self.stream.name).set(0)

    # -- the open connection ---------------------------------------------------------------------
    async def _pump(self, ws: TypedConnection, token: str) -> Disposition:
        clock = self.deps.clock
        keepalive = KeepAlive(self.ping_interval_s, self.settings.pong_timeout_s, clock())
        self._dead = self._kafka_failed = False
        self._first_event = True
        keeper = asyncio.get_running_loop().create_task(
            drive_keepalive(ws, keepalive, clock, self._mark_dead, self.log))
        try:
            while True:
                data, binary = await ws.recv_typed()
                keepalive.inbound(clock())
                frame = self.platform.parse(data, binary, self.settings.max_frame_bytes)
                if frame.kind is FrameKind.CLOSING:
                    self.log.info("ws.closing_notice")
                    await ws.close(1000, "Planned reconnect")
                    return close_codes.closing_notice()
                await self._handle(frame)
        except ConnectionClosed as err:
            return await self._closed(err, token)
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    async def _handle(self, frame: Frame) -> None:
        name, wall = self.stream.name, self.deps.wall()
        if frame.kind is FrameKind.EVENT:
            if self._first_event:
                self._first_event = False
                self._on_first_event()
            metrics.EVENTS_IN.labels(name).inc()
            metrics.LAST_EVENT_TS.labels(name).set(wall)
            late = self.progress.late
            seq = self.progress.track(frame.epoch if frame.epoch is not None else frame.cursor)
            if self.progress.late != late:
                metrics.LATE_EVENTS.labels(name).inc()
                self.log.warning("stream.late_event", dedup_key=frame.dedup_key)
            self._watch(seq, await self.deps.sink.send_event(
                name, self.stream.platform, frame, wall), produced=True)
        elif frame.kind is FrameKind.HEARTBEAT:
            metrics.HEARTBEATS.labels(name).inc()
        else:
            await self._dead_letter(frame.raw, frame.reason, frame.binary)

    async def _dead_letter(self, raw: bytes, reason: str, binary: bool = False) -> None:
        name = self.stream.name
        metrics.EVENTS_DLQ.labels(name, reason.split(":", maxsplit=1)[0]).inc()
        self.log.warning("stream.bad_frame", reason=reason, size=len(raw))
        seq = self.progress.track(None)
        self._watch(seq, await self.deps.sink.send_dlq(
            name, self.stream.platform, raw, reason, received_at=self.deps.wall(), binary=binary),
            produced=False)

    def _watch(self, seq: int, future: DeliveryFuture, produced: bool) -> None:
        self._pending.add(future)

        def done(f: DeliveryFuture) -> None:
            self._pending.discard(f)
            if not f.cancelled() and f.exception() is None:
                self.progress.ack(seq)
                if produced:
                    metrics.EVENTS_PRODUCED.labels(self.stream.name).inc()
                return
            self.progress.fail(seq)
            self._on_kafka_failure(f)

        future.add_done_callback(done)

    def _on_kafka_failure(self, future: DeliveryFuture) -> None:
        error = "cancelled" if future.cancelled() else safe_error(future.exception() or Exception())
        self.log.error("kafka.send_failed", error=error)
        ws = self._ws
        if ws is not None and not self._kafka_failed and self._closer is None:
            # the platform replays it after a reconnect from the acknowledged prefix
            self._kafka_failed = True
            self._closer = asyncio.get_running_loop().create_task(
                ws.close(1000, "Reconnecting"))

    def _on_first_event(self) -> None:
        if self.policy.event():
            self.log.info("breaker.closed")
        metrics.BREAKER_STATE.labels(self.stream.name).set(0)
        self._set(StreamStatus.STREAMING)

    def _mark_dead(self) -> None:
        self._dead = True

    async def _closed(self, err: ConnectionClosed, token: str) -> Disposition:
        if self._stopping.is_set():
            self.log.info("ws.closed", cause="shutdown", code=1000)
            return close_codes.stop()
        if self._dead:
            return close_codes.pong_timeout()
        if self._kafka_failed:
            return Disposition(Action.RECONNECT, "kafka_error")
        rcvd, sent = err.rcvd, err.sent
        if sent is not None and sent.code == 1009:
            await self._dead_letter(b"", "frame_over_hard_cap: websockets closed with 1009")
        disposition = close_codes.classify_close(rcvd.code if rcvd else None,
                                                 rcvd.reason if rcvd else "")
        if disposition.auth:
            self.deps.tokens.invalidate(token)  # never reuse a token after an auth close
        self.log.info("ws.closed", code=rcvd.code if rcvd else None,
                      reason=rcvd.reason if rcvd else None, cause=disposition.cause)
        return disposition

    # -- between attempts ------------------------------------------------------------------------
    async def _after(self, disposition: Disposition) -> None:
        name = self.stream.name
        if disposition.action is Action.PLANNED:
            plan = self.policy.planned()
        else:
            plan = self.policy.failure(self.deps.clock(), disposition.floor_s,
                                       auth=disposition.auth)
        metrics.WS_RECONNECTS.labels(name, disposition.cause).inc()
        if plan.opened:
            metrics.BREAKER_STATE.labels(name).set(2)
            self.log.error("breaker.opened", attempts=plan.attempts, cause=disposition.cause,
                           cooldown_s=plan.delay_s)
            self._set(StreamStatus.OPEN)
        else:
            self._set(StreamStatus.WAITING)
        metrics.BACKOFF_DELAY.labels(name).observe(plan.delay_s)
        metrics.BACKOFF_CURRENT.labels(name).set(plan.delay_s)
        self.log.info("ws.reconnect_scheduled", cause=disposition.cause,
                      delay_s=round(plan.delay_s, 3), attempts=plan.attempts,
                      floor_s=disposition.floor_s)
        await self._sleep(plan.delay_s)
        metrics.BACKOFF_CURRENT.labels(name).set(0)

    async def _settle(self) -> None:
        """Give sends still in flight a bounded time, so the resume point replays less."""
        pending = [f for f in self._pending if not f.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.settings.close_timeout_s)

    def _check_gap(self, resume: str | None) -> None:
        """Contract §2: a resume point older than retention loses events; report, not hide."""
        if resume is None or resume == self._gap_reported:
            return
        now = self.deps.wall()
        self.note_resume(resume, now)
        since = parse_timestamp(resume) if self.platform.resume_param == "since" else None
        basis = since if since is not None else self._resume_seen[1]
        if now - basis > self.retention_s:
            self._gap_reported = resume
            metrics.GAPS.labels(self.stream.name).inc()
            self.log.error("stream.gap", resume=resume, age_s=round(now - basis, 3),
                           retention_s=self.retention_s)

    # -- helpers -------------------------------------------------------------------------------
    async def _sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless stopped first; True when the full delay passed."""
        if delay <= 0:
            return not self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return True
        return False

    async def _race(self, awaitable: Awaitable[T]) -> T | None:
        """``awaitable``'s result, or None if a stop came first (the work is cancelled)."""
        loop = asyncio.get_running_loop()
        work: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        stopper = loop.create_task(self._stopping.wait())
        try:
            racers: set[asyncio.Future[object]] = {work, stopper}  # type: ignore[arg-type]
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work.cancelled():
            return None
        return work.result()

    def _fail(self, disposition: Disposition) -> None:
        self.fatal = disposition.detail or disposition.cause
        metrics.STREAM_FAILED.labels(self.stream.name).set(1)
        self.log.error("stream.failed", cause=disposition.cause, error=self.fatal)
        self._set(StreamStatus.FAILED)

    def _set(self, status: StreamStatus) -> None:
        if status is not self.status:
            self.status = status
            self.deps.on_change(self)

