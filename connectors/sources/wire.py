"""The thin I/O layer over websockets: one connection attempt, frames with their type, pings.

Decisions stay in the pure modules (``keepalive``, ``close_codes``); this module only carries
them out. Choices, each forced by a contract rule:

* One ``websockets.asyncio.client.connect()`` per attempt, never ``async for ws in connect()``
  (it freezes the URL, and the URL carries a fresh token and resume point every time).
* websockets' own keep-alive is off (``ping_interval=None``): ``drive_keepalive`` pings at the
  platform's interval and abandons the connection when ``KeepAlive`` says it is dead.
* Frames are read undecoded (``decode=False``) so that a text frame with invalid UTF-8 is bad
  input sent to the DLQ with its bytes, instead of websockets failing the connection with 1007
  (and the platform replaying the same frame forever). ``TypedConnection`` remembers the opcode
  of every message so that binary frames are still told apart.
* ``max_size`` is a hard cap of ``HARD_CAP_FACTOR`` x the configured frame limit: frames between
  the limit and the cap reach the DLQ (cut, see ``ccstream.records.dlq_value``); only a frame
  above the cap makes websockets close with 1009, which the session reports as a DLQ record
  without bytes. The platform replays that frame after the reconnect (it was never acknowledged),
  so the next attempt reads with ``RAISED_CAP_FACTOR`` (still bounded): the frame then reaches the
  DLQ with its bytes and the stream gets past it, instead of closing with 1009 forever. """

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode

from ccstream.config import StreamConfig
from ccstream.logs import BoundLogger, redact_password
from connectors.policy.keepalive import Beat, KeepAlive
from connectors.sources.proxy import Route

HARD_CAP_FACTOR = 4
RAISED_CAP_FACTOR = 64
_TOKEN_IN_TEXT = re.compile(r"(access_token|refresh_token|token)=[^&\s'\"]+")


def redact_text(text: str) -> str:
    """``text`` with the value of every token-bearing query parameter, and every password of a
    URL (``http://user:password@proxy``), cut out."""
    return redact_password(_TOKEN_IN_TEXT.sub(r"\1=[redacted]", text))


class _RedactTokens(logging.Filter):
    """websockets logs the request line (``GET /...?access_token=JWT``) at DEBUG: the token is
    removed here, at the source, whatever level an operator turns logging up to."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        return True


WS_LOGGER = logging.getLogger("ccstream.websockets")
WS_LOGGER.addFilter(_RedactTokens())


_TEXT, _BINARY = Opcode.TEXT, Opcode.BINARY
_process_event = ClientConnection.process_event


class TypedConnection(ClientConnection):
    """A client connection that remembers, per message, whether it was a binary frame."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binary: deque[bool] = deque()

    def process_event(self, event: Any) -> None:
        # once per frame: kept to a type check and two identity tests
        if isinstance(event, WsFrame):
            opcode = event.opcode
            if opcode is _TEXT:
                self.binary.append(False)
            elif opcode is _BINARY:
                self.binary.append(True)
        _process_event(self, event)

    async def recv_typed(self) -> tuple[bytes, bool]:
        """The next message's bytes, undecoded, and whether it was binary."""
        data = await self.recv(decode=False)
        return data, self.binary.popleft() if self.binary else False


def tls_context(stream: StreamConfig, log: BoundLogger) -> ssl.SSLContext | None:
    """Certificates are verified by default; switching it off is explicit and logged loudly."""
    urls = [u for e in stream.endpoint_list() for u in (e.url, e.token_url or "")]
    if not any(u.startswith(("wss://", "https://")) for u in urls):
        return None
    context = ssl.create_default_context(cafile=stream.ca_file)
    if stream.insecure_skip_verify:
        log.warning("tls.verification_disabled", reason="insecure_skip_verify = true")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def open_connection(url: str, *, max_frame_bytes: int, open_timeout_s: float,
                          close_timeout_s: float, context: ssl.SSLContext | None,
                          cap_factor: int = HARD_CAP_FACTOR, proxy: Route | None = None
                          ) -> TypedConnection:
    """One handshake; through ``proxy`` (HTTP CONNECT) when given, else direct: the proxy is
    always passed explicitly, so websockets never picks one from the environment by its own
    rules (``connectors.sources.proxy`` decides)."""
    kwargs: dict[str, Any] = {}
    if url.startswith("wss://") and context is not None:
        kwargs["ssl"] = context
    ws = await connect(
        url, create_connection=TypedConnection, ping_interval=None, ping_timeout=None,
        open_timeout=open_timeout_s, close_timeout=close_timeout_s,
        max_size=max_frame_bytes * cap_factor, max_queue=64, compression=None,
        logger=WS_LOGGER, proxy=proxy.url if proxy is not None else None, **kwargs,
    )
    assert isinstance(ws, TypedConnection)
    return ws


async def probe_handshake(url: str, *, max_frame_bytes: int, open_timeout_s: float,
                          close_timeout_s: float, context: ssl.SSLContext | None,
                          proxy: Route | None = None) -> None:
    """One handshake closed at once with 1000, no event read (failover probes, ``ccstream
    check``); raises what ``open_connection`` raises. Whatever the server sent meanwhile is
    discarded: the stream's own socket receives it."""
    ws = await open_connection(url, max_frame_bytes=max_frame_bytes,
                               open_timeout_s=open_timeout_s, close_timeout_s=close_timeout_s,
                               context=context, proxy=proxy)
    await ws.close(1000, "Probe")


async def drive_keepalive(ws: ClientConnection, keepalive: KeepAlive, clock: Callable[[], float],
                          on_dead: Callable[[], None], log: BoundLogger) -> None:
    """Ping on schedule; on a missed pong, call ``on_dead`` and abort the TCP connection.

    Aborting (not closing) is deliberate: a dead peer will not answer a close handshake, and the
    contract's drop has no close frame anyway. Any failure here aborts the connection too, so
    that the reader never waits on a connection nobody watches.
    """
    try:
        while True:
            now = clock()
            tick = keepalive.next(now)
            if tick.beat is Beat.DEAD:
                log.warning("ws.pong_timeout", pong_timeout_s=keepalive.pong_timeout_s)
                on_dead()
                ws.transport.abort()
                return
            if tick.beat is Beat.PING:
                waiter = cast("asyncio.Future[float]", await ws.ping())
                keepalive.ping_sent(now)
                waiter.add_done_callback(lambda f: _pong(f, keepalive, clock))
                continue
            await asyncio.sleep(max(tick.at - now, 0.0))
    except ConnectionClosed:
        return
    except asyncio.CancelledError:
        raise
    except Exception as err:  # noqa: BLE001 (a dead watchdog must not leave the reader unwatched)
        log.error("ws.keepalive_failed", error=repr(err))
        ws.transport.abort()


def _pong(future: asyncio.Future[float], keepalive: KeepAlive, clock: Callable[[], float]) -> None:
    if not future.cancelled() and future.exception() is None:
        keepalive.inbound(clock())
