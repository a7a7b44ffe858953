"""One accepted WebSocket on ``/channels/{id}``: a writer draining a queue, the reader in the
handler. The decisions (what to send, when to close) are the board's; this module only pumps.

``autoping=False`` and ``autoclose=False``: a silent (half-open) socket must answer neither an
RFC ping nor a close frame, so the driver decides both.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web

from simulator.genesys_cloud import frames
from simulator.genesys_cloud.channels import Sock, SockState
from simulator.genesys_cloud.model import new_uuid

if TYPE_CHECKING:
    from simulator.genesys_cloud.server import GenesysCloudSimulator

# close codes that may not be sent in a close frame (RFC 6455 7.4.1): echo 1000 instead
_RESERVED = frozenset({0, 1005, 1006, 1015})
REORDER_HOLD_S = 0.5


@dataclass(frozen=True)
class Out:
    kind: str                   # "frame" | "close" | "abort"
    data: bytes = b""
    binary: bool = False
    topic: str | None = None    # a notification: recorded in the ledger when written
    code: int = 1000
    reason: str = ""
    reset: bool = False


class Host(Protocol):
    def now(self) -> float: ...
    def written(self, driver: SocketDriver, out: Out) -> None: ...
    def received_text(self, driver: SocketDriver, text: str) -> None: ...
    def client_closing(self, driver: SocketDriver) -> None: ...
    def ended(self, driver: SocketDriver) -> None: ...


class SocketDriver:
    def __init__(self, host: Host, ws: web.WebSocketResponse, request: web.Request,
                 sock: Sock | None, channel_id: str) -> None:
        self.host = host
        self.ws = ws
        self.request = request
        self.sock = sock
        self.channel_id = channel_id
        self.client_code: int | None = None
        self.finished = False
        self.extra_left = 0            # ``frames`` extra_fields: next N notifications
        self.reorder_left = 0          # ``frames`` reorder: hold N notifications, then shuffle
        self.reorder_since: float | None = None
        self._held: list[tuple[str, bytes]] = []
        self.last_notification: tuple[str, bytes] | None = None
        self._queue: asyncio.Queue[Out] = asyncio.Queue()
        self._closing = False          # a close frame was sent or echoed
        self._server_closing = False   # the writer is running our close handshake

    @property
    def silent(self) -> bool:
        return self.sock is not None and self.sock.state is SockState.SILENT

    def put(self, out: Out) -> None:
        if not self.finished:
            self._queue.put_nowait(out)

    def notify(self, topic: str, frame: bytes) -> None:
        """A notification for this socket, through the socket's ``frames`` transforms."""
        if self.extra_left > 0:
            self.extra_left -= 1
            frame = frames.with_extra_fields(frame)
        if self.reorder_left > 0:
            self._held.append((topic, frame))
            self.reorder_left -= 1
            if self.reorder_since is None:
                self.reorder_since = self.host.now()
            if self.reorder_left == 0:
                self.flush_held()
            return
        self._put_notification(topic, frame)

    def _put_notification(self, topic: str, frame: bytes) -> None:
        self.last_notification = (topic, frame)
        self.put(Out("frame", frame, topic=topic))

    def flush_held(self) -> None:
        """Write the held notifications, topics in another order (also before any close)."""
        held, self._held = self._held, []
        self.reorder_left, self.reorder_since = 0, None
        for topic, frame in frames.reorder(held):
            self._put_notification(topic, frame)

    def close(self, code: int, reason: str = "") -> None:
        self.flush_held()
        self.put(Out("close", code=code, reason=reason))

    def abort(self, reset: bool) -> None:
        self.flush_held()
        self.put(Out("abort", reset=reset))

    # -- driver ---------------------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._write(), name=f"gc-ws-write-{self.channel_id}")
        try:
            await self._read()
            if self._server_closing and not writer.done():
                # our close() is reading the client's echo: let it finish
                await asyncio.wait({writer}, timeout=3.0)
        finally:
            self.finished = True
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            self.host.ended(self)

    async def _write(self) -> None:
        ws = self.ws
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                out = await self._queue.get()
                if out.kind == "frame":
                    if self.silent:
                        continue  # half-open: nothing reaches the client
                    await ws.send_frame(out.data, WSMsgType.BINARY if out.binary
                                        else WSMsgType.TEXT)
                    self.host.written(self, out)
                elif out.kind == "close":
                    self._closing = self._server_closing = True
                    await ws.close(code=out.code, message=out.reason.encode()[:120])
                    return
                else:
                    self._abort(out.reset)
                    return

    async def _read(self) -> None:
        ws = self.ws
        with contextlib.suppress(ConnectionError):
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT:
                    self.host.received_text(self, msg.data)
                elif msg.type is WSMsgType.PING:
                    if self.sock is not None and self.sock.state is SockState.OPEN:
                        await ws.pong(msg.data)
                elif msg.type is WSMsgType.CLOSE:
                    self.client_code = int(msg.data or 0)
                    self.host.client_closing(self)
                    if self.silent:
                        self._abort(False)   # half-open: the close frame goes unanswered
                    elif not self._closing:
                        self._closing = True
                        code = 1000 if self.client_code in _RESERVED else self.client_code
                        await ws.close(code=code)
                    return
                elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
                # binary or other frames from the client: ignored

    def _abort(self, reset: bool) -> None:
        transport = self.request.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if reset and sock is not None:
            # SO_LINGER on, timeout 0: close() sends RST instead of FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()



class Streaming:
    """``GET /channels/{id}`` (no token, s.5) and the drivers' callbacks (``Host``)."""

    def __init__(self, sim: GenesysCloudSimulator) -> None:
        self.sim = sim

    def now(self) -> float:
        return self.sim.now()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        ws = web.WebSocketResponse(autoping=False, autoclose=False, timeout=2.0, compress=False,
                                   max_msg_size=1 << 20)
        await ws.prepare(request)
        channel_id = request.match_info["channel"]
        now = sim.now()
        sock = sim.board.open_socket(channel_id, new_uuid(sim.rng), now)
        driver = SocketDriver(self, ws, request, sock, channel_id)
        if sock is None:  # unknown or gone: the 404 frame, then close 1000 (s.5)
            known = sim.board.channels.get(channel_id)
            stats = sim.stats_of(known.client_id if known else None)
            stats.sockets_to_gone += 1
            stats.not_found_frames_sent += 1
            stats.closes_sent[1000] += 1
            driver.put(Out("frame", frames.not_found(channel_id)))
            driver.close(1000)
            await driver.run()
            return ws
        sim.drivers[sock.id] = driver
        stats = sim.stats_of(sock.client_id)
        stats.sockets_opened += 1
        stats.sockets_open += 1
        stats.max_sockets_open = max(stats.max_sockets_open, stats.sockets_open)
        sim.touch(sock.client_id, now)
        self._log(sock, "ws.connected")
        await driver.run()
        return ws

    def _log(self, sock: Sock, event: str, **fields: object) -> None:
        self.sim.log.info(event, client=sock.client_id, channel=sock.channel_id,
                          socket=sock.number, **fields)

    def written(self, driver: SocketDriver, out: Out) -> None:
        sock = driver.sock
        if out.topic is None or sock is None:
            return
        self.sim.stats_of(sock.client_id).notifications_sent += 1
        sock.notifications += 1
        self.sim.ledger.record(sock.client_id, out.topic, sent_at=self.sim.now(),
                               channel=sock.channel_id, socket=sock.id, data=out.data)

    def received_text(self, driver: SocketDriver, text: str) -> None:
        sock = driver.sock
        if sock is None:
            return
        stats = self.sim.stats_of(sock.client_id)
        if not frames.is_ping(text):
            stats.client_frames_other += 1
            return
        stats.pings += 1
        answer = self.sim.board.on_ping(sock, self.sim.now())
        if answer == "now":   # s.5: the server pongs within 1 s
            stats.pongs += 1
            driver.put(Out("frame", frames.PONG))
        elif answer == "delayed":
            stats.pongs_delayed += 1
        elif answer == "dropped":
            stats.pongs_dropped += 1

    def client_closing(self, driver: SocketDriver) -> None:
        """The client's close frame arrived: from now on the socket covers nothing (s.6)."""
        sock = driver.sock
        if sock is not None and sock.alive:
            sock.state = SockState.CLOSING
            self.sim.touch(sock.client_id)

    def ended(self, driver: SocketDriver) -> None:
        sock = driver.sock
        if sock is None:
            return
        sim, now = self.sim, self.sim.now()
        sim.drivers.pop(sock.id, None)
        sim.board.socket_closed(sock, now)
        stats = sim.stats_of(sock.client_id)
        stats.sockets_open -= 1
        if driver.client_code is not None:
            stats.client_close_codes[driver.client_code] += 1
        sim.touch(sock.client_id, now)
        self._log(sock, "ws.closed", client_code=driver.client_code)
