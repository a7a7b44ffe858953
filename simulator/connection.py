"""One WebSocket connection of the simulator: an explicit state machine and its async driver.

The driver is one writer loop (events, heartbeats, timers, faults) plus one reader task (pings,
close frames). ``autoping=False`` on the server side lets the simulator decide whether to answer
a ping: that is how silent drops are made, and how "no ping within the window" is observed.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import orjson
from aiohttp import WSMsgType, web

from simulator.events import Event, rfc3339_ms
from simulator.faults import AUTH_REASONS, MALFORMED_VARIANTS, Fault, FaultKind
from simulator.ledger import ClientStats
from simulator.settings import SimSettings
from simulator.stream import Stream

BATCH = 256


class ConnState(Enum):
    OPEN = "open"            # streaming
    DRAINING = "draining"    # closing notice sent: still streaming, closes at a set time
    SILENT = "silent"        # a silent drop: sends nothing, answers no ping, aborts later
    CLOSING = "closing"      # close frame sent, waiting for the echo
    CLOSED = "closed"


TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    ConnState.OPEN: frozenset({ConnState.DRAINING, ConnState.SILENT, ConnState.CLOSING,
                               ConnState.CLOSED}),
    ConnState.DRAINING: frozenset({ConnState.SILENT, ConnState.CLOSING, ConnState.CLOSED}),
    ConnState.SILENT: frozenset({ConnState.CLOSED}),
    ConnState.CLOSING: frozenset({ConnState.CLOSED}),
    ConnState.CLOSED: frozenset(),
}
SENDING = frozenset({ConnState.OPEN, ConnState.DRAINING})


def is_auth_close(code: int, reason: bytes) -> bool:
    """docs/protocols.md "Closing": 1008, or 1000 with an ``{"error": ...}`` auth payload."""
    if code == 1008:
        return True
    if code != 1000 or not reason.startswith(b"{"):
        return False
    try:
        return orjson.loads(reason).get("error") in AUTH_REASONS
    except (orjson.JSONDecodeError, AttributeError):
        return False


def malformed_frames(variant: str, oversized: int, timestamp: str) -> tuple[bytes, bool]:
    """The bytes of one bad frame of ``variant`` and whether it goes as a binary frame."""
    event = {"eventType": "interaction.routed", "correlationId": "malformed-0",
             "timestamp": timestamp, "eventBody": {}}
    if variant == "not_json":
        return b'{"eventType": "interaction.routed", "correlationId": ', False
    if variant == "not_object":
        return orjson.dumps(["interaction.routed", "malformed-0", timestamp]), False
    if variant == "missing_field":
        return orjson.dumps({k: v for k, v in event.items() if k != "correlationId"}), False
    if variant == "binary":
        return orjson.dumps(event), True
    if variant == "oversized":
        return orjson.dumps({**event, "eventBody": {"padding": "x" * oversized}}), False
    # invalid_utf8: a text frame whose payload is not UTF-8 (RFC 6455 5.6 forbids it; aiohttp's
    # send_frame writes the bytes as given, which is exactly the misbehaviour wanted here)
    return b'{"eventType": "interaction.routed", "correlationId": "\xff\xfe\xfd"}', False


class Host(Protocol):
    """What a connection needs from the simulator."""

    settings: SimSettings

    def now(self) -> float: ...
    def take_fault(self, conn: Connection) -> Fault | None: ...
    def auth_closed(self, conn: Connection) -> None: ...
    def retry_given(self, client_id: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Admission:
    """What the handshake decided for an accepted connection."""

    stream: Stream
    stats: ClientStats
    number: int            # the client's Nth connection, from 1
    jti: str | None        # the access token's id (revoked after an auth close)
    token_exp: float       # the token's exp (server clock)
    types: frozenset[str]  # empty: every type
    start_seq: int


class Connection:
    def __init__(self, host: Host, ws: web.WebSocketResponse, request: web.Request,
                 admission: Admission) -> None:
        self.host = host
        self.ws = ws
        self.request = request
        self.stream = stream = admission.stream
        self.stats = admission.stats
        self.number = admission.number
        self.jti = admission.jti
        self.types = admission.types
        self.next_seq = admission.start_seq
        token_exp = admission.token_exp
        number = admission.number
        self.state = ConnState.OPEN
        self.events_sent = 0
        settings = host.settings
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self._token_deadline = now + (token_exp - host.now())
        self._ping_window = settings.ping_window(stream.platform)
        self._last_ping = now
        self._heartbeat_every = settings.scaled(settings.heartbeat_s)
        self._next_heartbeat = now + self._heartbeat_every
        self._stall_until = 0.0
        self._close_at: float | None = None
        self._close_code = 1001
        self._silent_until = 0.0
        self._rng = random.Random(f"{settings.seed}:{stream.client_id}:{number}")
        self._dups: deque[tuple[int, Event]] = deque()
        self._pending: deque[Fault] = deque()
        self._wake = asyncio.Event()
        self._replaced = False  # single-session mode: a newer connection of this stream opened

    @property
    def client_id(self) -> str:
        return self.stream.client_id

    def move(self, state: ConnState) -> None:
        if state is self.state:
            return
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection {self.state.value} -> {state.value} not allowed")
        self.state = state

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    def wake(self) -> None:
        self._wake.set()

    def replace(self) -> None:
        """A newer connection of this stream opened (single-session mode): close this one, from
        its own writer loop, with the settings' ``replaced_code``."""
        if not self._replaced and not self.closed:
            self._replaced = True
            self.stats.replaced += 1
            self.wake()

    # -- driver ---------------------------------------------------------------------------------
    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        self.stream.listeners.add(self)
        try:
            await self._write_loop()
        except ConnectionError:
            pass  # the peer went away while we wrote: the connection is over
        finally:
            self.stream.listeners.discard(self)
            if self.state is not ConnState.CLOSED:
                self.state = ConnState.CLOSED
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _write_loop(self) -> None:
        while self.state is not ConnState.CLOSED:
            if self._replaced and not self.closed:
                await self.close(self.host.settings.replaced_code, b"replaced")
                continue
            while self._pending and not self.closed:
                await self.fire(self._pending.popleft())
            now = self._loop.time()
            await self._timers(now)
            if self.state not in SENDING:
                if self.closed:
                    return
            elif now >= self._stall_until:
                fault = self.host.take_fault(self)
                if fault is not None:
                    await self.fire(fault)
                    continue
                if await self._send_batch():
                    await asyncio.sleep(0)  # let the other connections write too
                    continue
            await self._sleep(self._deadline(now))

    async def _sleep(self, deadline: float) -> None:
        handle = self._loop.call_at(deadline, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()
            self._wake.clear()

    def _deadline(self, now: float) -> float:
        deadlines = [self._last_ping + self._ping_window, self._token_deadline, now + 1.0]
        if self.state in SENDING:
            deadlines.append(self._next_heartbeat)
            if self._stall_until > now:
                deadlines.append(self._stall_until)
        if self._close_at is not None:
            deadlines.append(self._close_at)
        if self.state is ConnState.SILENT:
            deadlines.append(self._silent_until)
        return min(deadlines)

    async def _timers(self, now: float) -> None:
        if self.state is ConnState.SILENT:
            if now >= self._silent_until:
                self.abort("silent", reset=False)
            return
        if now >= self._last_ping + self._ping_window:
            # contract: a client sending no ping within the window is dropped, no close frame
            self.abort("idle", reset=False)
        elif now >= self._token_deadline:
            # contract: "When the token of an open connection expires, the server closes it
            # with 1008"
            await self.close(1008, b'{"error": "token_expired"}')
        elif self._close_at is not None and now >= self._close_at:
            await self.close(self._close_code, b"")
        elif self.state in SENDING and now >= self._next_heartbeat and now >= self._stall_until:
            self._next_heartbeat = now + self._heartbeat_every
            await self._notice("system.heartbeat")
            self.stats.heartbeats_sent += 1

    async def _notice(self, event_type: str) -> None:
        stamp = rfc3339_ms(int(self.host.now() * 1000))
        frame = orjson.dumps({"eventType": event_type, "timestamp": stamp})
        await self.ws.send_frame(frame, WSMsgType.TEXT)

    async def _send_batch(self) -> int:
        log = self.stream.log
        if self.next_seq < log.first_seq:
            self.stats.gaps_served += 1  # fell behind retention: those events are gone
        batch = log.batch(self.next_seq, BATCH)
        sent = 0
        for event in batch:
            if self.types and event.event_type not in self.types:
                self.next_seq = event.seq + 1
                continue
            fault = self.host.take_fault(self)
            if fault is not None:  # fire it before this event, which goes next
                await self.fire(fault)
                return sent + 1
            self.next_seq = event.seq + 1
            await self._send_event(event)
            sent += 1
            if self._dups and self._dups[0][0] <= self.events_sent:
                await self.ws.send_frame(self._dups.popleft()[1].frame, WSMsgType.TEXT)
                self.stats.duplicates_sent += 1
        return sent or len(batch)

    async def _send_event(self, event: Event) -> None:
        await self.ws.send_frame(event.frame, WSMsgType.TEXT)
        self.events_sent += 1
        self.stats.events_sent += 1
        if not event.sent:
            self.stream.ledger.record(event)
        duplicate_rate = self.host.settings.duplicate_rate
        if duplicate_rate and self._rng.random() < duplicate_rate:
            # at least once (contract): the same frame again a few events later
            self._dups.append((self.events_sent + self._rng.randint(1, 20), event))

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.ws.receive()
                if msg.type is WSMsgType.PING:
                    self.stats.pings += 1
                    self._last_ping = self._loop.time()
                    if self.state is not ConnState.SILENT:
                        await self.ws.pong(msg.data)
                        self.stats.pongs += 1
                elif msg.type is WSMsgType.CLOSE:
                    # the client closed first; aiohttp already echoed the close frame
                    self.stats.close_codes[int(msg.data)] += 1
                    break
                elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
        except ConnectionError:
            pass
        finally:
            if self.state is not ConnState.CLOSING:
                self.state = ConnState.CLOSED
            self.wake()

    # -- actions (faults and rules) --------------------------------------------------------------
    async def close(self, code: int, reason: bytes) -> None:
        if self.state in (ConnState.CLOSING, ConnState.CLOSED):
            return
        if self.state is ConnState.SILENT:  # a silent connection sends no frame at all
            self.abort("silent", reset=False)
            return
        self.move(ConnState.CLOSING)
        self.stats.closes_sent[code] += 1
        if is_auth_close(code, reason):
            self.host.auth_closed(self)
        try:
            await self.ws.close(code=code, message=reason)
        finally:
            self.state = ConnState.CLOSED

    def abort(self, kind: str, reset: bool) -> None:
        """Drop the connection without a close frame; ``reset`` sends a TCP RST."""
        if self.state is ConnState.CLOSED:
            return
        self.stats.drops[kind] += 1
        transport = self.request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if reset and sock is not None:
                # SO_LINGER on, timeout 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        self.state = ConnState.CLOSED
        self.wake()

    def post(self, fault: Fault) -> None:
        """Queue a fault for this connection's writer loop (from another task)."""
        self._pending.append(fault)
        self.wake()

    async def fire(self, fault: Fault) -> None:
        """Carry out a connection fault now."""
        kind = fault.fault_kind
        self.stats.faults[kind.value] += 1
        now = self._loop.time()
        if kind is FaultKind.CLOSE:
            if fault.code == 1013 and fault.retry_after is not None:
                self.host.retry_given(self.client_id, fault.retry_after)
            await self.close(fault.code or 1000, fault.close_reason())
        elif kind is FaultKind.CLOSING_NOTICE:
            delay = self.host.settings.scaled(self.host.settings.closing_notice_s)
            await self.send_closing_notice(fault.delay_s if fault.delay_s is not None else delay,
                                           fault.code or 1001)
        elif kind is FaultKind.SILENT:
            self.move(ConnState.SILENT)
            hold = self.host.settings.scaled(self.host.settings.silent_hold_s)
            self._silent_until = now + (fault.duration_s if fault.duration_s is not None else hold)
        elif kind is FaultKind.RESET:
            self.abort("reset", reset=True)
        elif kind is FaultKind.STALL:
            self._stall_until = now + (fault.duration_s or 0.0)
        elif kind is FaultKind.MALFORMED:
            await self._send_malformed(fault)
        elif kind is FaultKind.MASS_DISCONNECT:
            if fault.code is None:
                self.abort("reset", reset=True)
            else:
                await self.close(fault.code, b"")
        elif kind is FaultKind.EXPIRE_TOKEN:
            await self.close(1008, b'{"error": "token_expired"}')
        elif kind is FaultKind.MAINTENANCE:
            delay = fault.delay_s if fault.delay_s is not None else 0.0
            await self.send_closing_notice(delay, 1012)  # 1012: service restart

    async def send_closing_notice(self, delay_s: float, code: int) -> None:
        if self.state not in SENDING:
            return
        await self._notice("system.socket_closing")
        self.move(ConnState.DRAINING)
        self._close_at = self._loop.time() + delay_s
        self._close_code = code

    async def _send_malformed(self, fault: Fault) -> None:
        variants = (fault.variant,) if fault.variant else MALFORMED_VARIANTS
        stamp = rfc3339_ms(int(self.host.now() * 1000))
        for _ in range(fault.count):
            for variant in variants:
                data, binary = malformed_frames(variant, self.host.settings.oversized_bytes, stamp)
                await self.ws.send_frame(data, WSMsgType.BINARY if binary else WSMsgType.TEXT)
                self.stats.malformed_sent[variant] += 1
