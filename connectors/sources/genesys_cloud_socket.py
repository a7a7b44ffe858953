"""The sockets of one Genesys Cloud channel slot: dial, read, health check, what an ending was.

genesys-cloud contract §5. ``connectUri`` is dialled as given: no token, no auth header. Each
socket has its own reader task, so that during a make-before-break both sockets are read (the
old one's notifications until its close are records too: duplicates are allowed, losses are
not). The reader hands notifications to delivery itself, in arrival order, and tells the slot's
controller (``events``) only what changes the channel's state: a closing notice, a 404 frame,
the socket's end. Coverage (§6) is kept here, where the facts are: a socket covers from its
handshake (or the PUT answer, if later), up to its last frame while open, and until the close
frame or 404 frame when it ends (``covered_until``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ccstream import metrics
from ccstream.config import ConnectorSettings, GenesysCloudStream
from ccstream.logs import BoundLogger
from connectors.kafka.delivery import Delivery, safe_error
from connectors.platforms import Frame, FrameKind
from connectors.policy import gc_records
from connectors.policy.gc_channel import Health
from connectors.policy.gc_records import Kind
from connectors.policy.keepalive import Beat
from connectors.sources.genesys_cloud_rest import StoppedError
from connectors.sources.proxy import environment_rules
from connectors.sources.stopping import Stopping
from connectors.sources.wire import TypedConnection, open_connection

GONE_STATUS = 404


@dataclass(eq=False)
class Sock:
    number: int                     # unique within the slot (the coverage key)
    ws: TypedConnection
    channel_id: str
    opened_at: float                # wall: the handshake
    last_frame: float               # wall: the last frame of any kind (the handshake at first)
    first_seen: bool = False        # a notification or heartbeat arrived (resets the attempts)
    dead: bool = False              # the health check gave up on it
    gone_at: float | None = None    # wall: a 404 frame arrived
    ended: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


@dataclass(frozen=True)
class SockEvent:
    kind: str                       # "closing" | "gone" | "ended" | "switched" | "switch_gone"
    channel_id: str
    sock: Sock | None = None
    code: int | None = None         # "ended": the close code received (None: no close frame)
    reason: str = ""


class SocketHost(Protocol):
    """What a slot's sockets need of the slot (``ChannelSlot``)."""

    index: int
    stream: GenesysCloudStream
    settings: ConnectorSettings
    delivery: Delivery
    stopping: Stopping
    log: BoundLogger
    clock: Callable[[], float]
    wall: Callable[[], float]
    events: asyncio.Queue[SockEvent]

    def first_frame(self, sock: Sock) -> None: ...

    def frame_seen(self, sock: Sock, at: float) -> None: ...

    def gone_frame(self, sock: Sock) -> None: ...

    def socket_ended(self, sock: Sock, close_at: float | None, code: int | None,
                     reason: str) -> None: ...


async def dial(host: SocketHost, uri: str, context: ssl.SSLContext | None
               ) -> TypedConnection | str:
    """One handshake on ``connectUri``: the connection, ``"gone"`` (404: the channel is gone),
    or ``"failed"`` (retry after a backoff)."""
    settings = host.settings
    try:
        ws = await host.stopping.race(open_connection(
            uri, max_frame_bytes=settings.max_frame_bytes,
            open_timeout_s=settings.open_timeout_s, close_timeout_s=settings.close_timeout_s,
            context=context, proxy=environment_rules().route(uri, host.stream.proxy)))
    except InvalidStatus as err:
        status = err.response.status_code
        host.log.warning("ws.handshake_rejected", status=status, cause="channel_gone"
                         if status == GONE_STATUS else "handshake_failed")
        return "gone" if status == GONE_STATUS else "failed"
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
        host.log.warning("ws.connect_failed", error=safe_error(err))
        return "failed"
    if ws is None:
        raise StoppedError
    return ws


async def dial_cancellable(host: SocketHost, uri: str, context: ssl.SSLContext | None
                           ) -> TypedConnection | str:
    """``dial`` for a task that may be cancelled (a make-before-break the slot gave up): a
    handshake that completes after the cancel is closed at once, never left open unread on the
    channel (one socket per channel, §5)."""
    task = asyncio.ensure_future(dial(host, uri, context))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_close_orphan)
        raise


def _close_orphan(task: asyncio.Future[TypedConnection | str]) -> None:
    if task.cancelled() or task.exception() is not None:
        return
    ws = task.result()
    if isinstance(ws, TypedConnection):
        _ORPHANS.add(closer := asyncio.ensure_future(ws.close(1000, "Not needed")))
        closer.add_done_callback(_ORPHANS.discard)


_ORPHANS: set[asyncio.Future[None]] = set()  # strong references until their close completes


def start(host: SocketHost, sock: Sock) -> None:
    """The reader and health-check tasks of a socket just opened."""
    task = asyncio.get_running_loop().create_task(read(host, sock))
    sock.tasks.add(task)
    task.add_done_callback(sock.tasks.discard)


async def read(host: SocketHost, sock: Sock) -> None:
    settings, stream = host.settings, host.stream
    health = Health(stream.health_after_s, stream.health_timeout_s, host.clock())
    keeper = asyncio.get_running_loop().create_task(keep(host, sock, health))
    close_at: float | None = None
    code: int | None = None
    reason = ""
    try:
        while True:
            data, binary = await sock.ws.recv_typed()
            now = host.wall()
            health.inbound(host.clock())
            sock.last_frame = now
            host.frame_seen(sock, now)
            await on_frame(host, sock, gc_records.classify(data, binary,
                                                         settings.max_frame_bytes), data, binary)
    except ConnectionClosed as err:
        if err.rcvd is not None:
            close_at, code, reason = host.wall(), err.rcvd.code, err.rcvd.reason
    except Exception as err:  # noqa: BLE001 (a read error ends the socket like a reset)
        host.log.error("stream.internal_error", error=safe_error(err))
        sock.ws.transport.abort()
    finally:
        keeper.cancel()
        await asyncio.gather(keeper, return_exceptions=True)
        host.socket_ended(sock, close_at, code, reason)


async def on_frame(host: SocketHost, sock: Sock, frame: gc_records.Classified, data: bytes,
                   binary: bool) -> None:
    kind = frame.kind
    if kind is Kind.EVENT:
        host.first_frame(sock)
        await host.delivery.event(Frame(
            FrameKind.EVENT, data, correlation_id=frame.correlation_id,
            dedup_key=frame.dedup_key, epoch=sock.last_frame, origin="live"))
    elif kind is Kind.HEARTBEAT:
        host.first_frame(sock)
        metrics.HEARTBEATS.labels(host.stream.name).inc()
    elif kind is Kind.CLOSING:
        host.events.put_nowait(SockEvent("closing", sock.channel_id, sock))
    elif kind is Kind.GONE:
        host.gone_frame(sock)
    elif kind is Kind.IGNORED:
        host.log.info("ws.frame_ignored", what=frame.reason, channel_id=sock.channel_id)
    elif kind is Kind.BAD:
        await host.delivery.dead_letter(data, frame.reason, binary)


async def keep(host: SocketHost, sock: Sock, health: Health) -> None:
    """§5 health check: ping after ``health_after_s`` of silence, dead ``health_timeout_s``
    after it: close (websockets drops the TCP connection after ``close_timeout_s``)."""
    try:
        while True:
            now = host.clock()
            tick = health.next(now)
            if tick.beat is Beat.DEAD:
                host.log.warning("ws.pong_timeout", pong_timeout_s=host.stream.health_timeout_s,
                                 channel_id=sock.channel_id)
                sock.dead = True
                close(sock, "Health check failed")
                return
            if tick.beat is Beat.PING:
                await sock.ws.send(gc_records.PING)
                health.ping_sent(now)
                continue
            await asyncio.sleep(max(tick.at - now, 0.0))
    except ConnectionClosed:
        return
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 (a dead watchdog must not leave the reader unwatched)
        host.log.error("ws.keepalive_failed", error=safe_error(err))
        sock.ws.transport.abort()


def close(sock: Sock, reason: str) -> None:
    """Close with 1000 in the background; the reader sees the end and reports it."""
    if sock.ended:
        return
    task = asyncio.get_running_loop().create_task(sock.ws.close(1000, reason))
    sock.tasks.add(task)
    task.add_done_callback(sock.tasks.discard)

