"""One channel slot of a Genesys Cloud stream: the driver of ``policy.gc_channel``'s machine.

genesys-cloud contract §3-§5. The controller runs one handler per state, each doing that state's
I/O and answering an ``Event``; ``gc_channel.step`` says where it leads. Sockets are read by
their own tasks (``genesys_cloud_socket``), which report to the controller through ``events``:

* NEW: ``POST /channels`` (``channel.created``). SUBSCRIBING: ``PUT`` the whole list with
  ``?ignoreErrors=true``; 404 = the channel is gone. CONNECTING: the per-host cap, then dial.
* OPEN: wait for what the sockets say, and for the rollover (``channel_rollover_s`` after the
  last successful PUT: the same list again, ``channel.rolled_over``).
* A closing notice: SWITCHING opens S' on the same channel (retried with backoff, S kept);
  once it is open, S is closed with 1000 at once (the server allows two sockets 5 s).
* 4000 on the current socket: ``channel.replaced``, a new channel. A 404 frame, a HEAD or a
  subscription 404: ``channel.gone``, a new channel. Any other ending: WAITING (backoff with
  jitter and salt, the breaker), then CHECKING (``HEAD``): 200 the same channel, 404 a new one.
  Inside a declared maintenance window (``[[maintenance]]``, docs/operations.md) WAITING is one
  jittered probe per ``probe_interval_s`` instead, counting towards neither the backoff nor the
  breaker (``maintenance.waiting``; the slot is ``waiting_out`` and the stream ``maintenance``).

The attempt counter resets at a new socket's first notification or heartbeat (§5).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ccstream import metrics
from ccstream.config import ConnectorSettings, GenesysCloudStream
from ccstream.logs import BoundLogger
from ccstream.timefmt import rfc3339
from connectors.kafka.delivery import Delivery
from connectors.policy.backoff import Backoff
from connectors.policy.breaker import Breaker, BreakerState
from connectors.policy.close_codes import Action, Disposition
from connectors.policy.gc_channel import (
    EVENTS,
    GAP_REASONS,
    ChannelState,
    Ending,
    Event,
    Rollover,
    classify_end,
    covered_until,
    step,
)
from connectors.policy.gc_coverage import Coverage, Gap
from connectors.policy.maintenance import Calendar, Open, probe_delay
from connectors.policy.retry import Plan, ReconnectPolicy, RetryWindow
from connectors.sources import genesys_cloud_socket as sockets
from connectors.sources.base import SourceDeps
from connectors.sources.genesys_cloud_rest import CHANNELS, GcFatalError, GcRest, StoppedError
from connectors.sources.genesys_cloud_socket import Sock, SockEvent
from connectors.sources.observer import StreamObserver
from connectors.sources.stopping import Stopping
from connectors.sources.wire import TypedConnection


@dataclass
class Channel:
    id: str
    uri: str
    expires: str
    permitted_at: float | None = None   # wall: the first PUT answer on it (coverage starts)


class SlotHost(Protocol):
    """What a slot needs of its stream (``GenesysCloudSource``)."""

    stream: GenesysCloudStream
    settings: ConnectorSettings
    deps: SourceDeps
    rest: GcRest
    delivery: Delivery
    stopping: Stopping
    observe: StreamObserver
    tls: ssl.SSLContext
    calendar: Calendar     # the stream's declared maintenance windows

    @property
    def coverage(self) -> Coverage: ...

    def report(self, gap: Gap | None) -> None: ...

    def subscribed(self, slot: int, channel_id: str, body: Any, received: float) -> None: ...

    def slot_changed(self) -> None: ...


class ChannelSlot:
    def __init__(self, host: SlotHost, index: int, ids: tuple[str, ...]) -> None:
        self.host = host
        self.index = index
        self.ids = ids
        self.stream, self.settings = host.stream, host.settings
        self.delivery, self.stopping = host.delivery, host.stopping
        self.log: BoundLogger = host.observe.log.bind(slot=index)
        self.clock, self.wall = host.deps.clock, host.deps.wall
        s = self.settings
        self.policy = ReconnectPolicy(
            Backoff(s.backoff_base_s, s.backoff_max_s, s.jitter, host.deps.rand,
                    s.deployment_offset_s),
            RetryWindow(s.retry_window_s), Breaker(s.breaker_cooldown_s), s.max_attempts,
            s.max_auth_failures)
        self.rollover = Rollover(self.stream.channel_rollover_s)
        self.state = ChannelState.NEW
        self.channel: Channel | None = None
        self.current: Sock | None = None
        self.sockets: set[Sock] = set()       # every socket not ended yet
        self.events: asyncio.Queue[SockEvent] = asyncio.Queue()
        self.last_put = 0.0                   # clock: the last successful PUT
        self._numbers = 0
        self._cause = "connect_error"         # why the slot is WAITING
        self.waiting_out = False              # WAITING inside a maintenance window
        self._switcher: asyncio.Task[None] | None = None

    # -- the machine -----------------------------------------------------------------------------
    async def run(self) -> None:
        handlers: dict[ChannelState, Callable[[], Awaitable[Event]]] = {
            ChannelState.NEW: self._create, ChannelState.SUBSCRIBING: self._subscribe,
            ChannelState.CONNECTING: self._connect, ChannelState.OPEN: self._open,
            ChannelState.SWITCHING: self._open, ChannelState.WAITING: self._wait,
            ChannelState.CHECKING: self._check,
        }
        try:
            while self.state in handlers:
                event = Event.STOP if self.stopping.is_set() else await handlers[self.state]()
                self._go(event)
        except StoppedError:
            self._go(Event.STOP)
        except GcFatalError:
            self._go(Event.FATAL)
            raise
        finally:
            await self._wind_down()

    def _go(self, event: Event) -> None:
        self.state = step(self.state, event)
        if self.state is not ChannelState.SWITCHING and self._switcher is not None:
            self._switcher.cancel()
            self._switcher = None
        if self.state in (ChannelState.WAITING, ChannelState.NEW):
            # no current socket now: one a cancelled switch left open must not stay (one
            # socket per channel, §5)
            self.close_all("Channel left")
        self.host.slot_changed()

    # -- NEW, SUBSCRIBING, CHECKING: REST -------------------------------------------------------
    async def _create(self) -> Event:
        answer = await self.host.rest.request("POST", CHANNELS)
        doc = answer.body if isinstance(answer.body, dict) else {}
        if not answer.ok or not all(isinstance(doc.get(k), str) for k in ("id", "connectUri")):
            raise GcFatalError(self.host.rest.line("POST", CHANNELS, answer))
        self.channel = Channel(doc["id"], doc["connectUri"], str(doc.get("expires", "")))
        self.log.info("channel.created", channel_id=self.channel.id, expires=self.channel.expires)
        return Event.CREATED

    async def _subscribe(self) -> Event:
        channel = self._channel()
        if not await self._put(channel):
            return Event.GONE
        return Event.SUBSCRIBED

    async def _put(self, channel: Channel) -> bool:
        """PUT the whole list (§4: replace, ``ignoreErrors=true``); False: the channel is gone."""
        path = f"{CHANNELS}/{channel.id}/subscriptions"
        answer = await self.host.rest.request("PUT", path, body=[{"id": t} for t in self.ids],
                                              params={"ignoreErrors": "true"})
        received = self.wall()
        if answer.status == 404:
            self._gone("subscription 404")
            return False
        if not answer.ok:  # §3: 400/403 on subscriptions: the stream fails, naming the call
            raise GcFatalError(self.host.rest.line("PUT", path, answer))
        if channel.permitted_at is None:
            channel.permitted_at = received
        self.last_put = self.clock()
        self.host.subscribed(self.index, channel.id, answer.body, received)
        return True

    async def _check(self) -> Event:
        channel = self._channel()
        path = f"{CHANNELS}/{channel.id}"
        answer = await self.host.rest.request("HEAD", path)
        if answer.status == 404:
            self._gone("HEAD 404")
            return Event.GONE
        if not answer.ok:
            raise GcFatalError(self.host.rest.line("HEAD", path, answer))
        return Event.HEAD_OK

    # -- CONNECTING, WAITING ---------------------------------------------------------------------
    async def _connect(self) -> Event:
        channel = self._channel()
        await self._allowed()
        result = await sockets.dial(self, channel.uri, self.host.tls)
        if result == "gone":
            self._gone("handshake 404")
            return Event.GONE
        if isinstance(result, str):
            self._cause = "connect_error"
            return Event.CONNECT_FAILED
        self.current = self._adopt(channel, result)
        return Event.CONNECTED

    async def _allowed(self) -> None:
        """The breaker (half-open probe) and the per-host reconnect cap across every stream."""
        while (wait := self.policy.ready(self.clock())) > 0:
            await self._sleep(wait)
        if self.policy.breaker.state is BreakerState.HALF_OPEN:
            self.host.observe.half_open()
        wait = self.host.deps.limiter.reserve(self.clock())
        if wait > 0:
            self.host.observe.rate_limited(wait)
            await self._sleep(wait)

    async def _wait(self) -> Event:
        window = self.host.calendar.open_at(self.wall())
        if window is not None:
            return await self._wait_out(window)
        plan = self.policy.failure(self.clock())
        self.host.slot_changed()
        self.host.observe.reconnect_scheduled(Disposition(Action.RECONNECT, self._cause), plan)
        await self._sleep(plan.delay_s)
        self.host.observe.backoff_over()
        return Event.BACKOFF_OVER

    async def _wait_out(self, window: Open) -> Event:
        """WAITING inside a declared window: one probe about every ``probe_interval_s``, no
        backoff, no breaker (the platform said it would be away)."""
        delay = probe_delay(window, self.wall(), self.host.deps.rand)
        self.waiting_out = True
        self.host.slot_changed()
        self.log.info("maintenance.waiting", until=rfc3339(window.end),
                      probe_in_s=round(delay, 3), dropped=self._cause)
        self.host.observe.reconnect_scheduled(Disposition(Action.RECONNECT, "maintenance"),
                                              Plan(delay, 0, self.policy.breaker.state))
        try:
            await self._sleep(delay)
        finally:
            self.waiting_out = False
        self.host.observe.backoff_over()
        return Event.BACKOFF_OVER

    # -- OPEN, SWITCHING -------------------------------------------------------------------------
    async def _open(self) -> Event:
        while True:
            wait = self.rollover.due_in(self.last_put, self.clock())
            try:
                got = await self.stopping.race(asyncio.wait_for(self.events.get(), wait))
            except TimeoutError:
                return await self._roll_over()
            if got is None:
                raise StoppedError
            event = self._on(got)
            if event is not None:
                return event

    async def _roll_over(self) -> Event:
        channel = self._channel()
        if not await self._put(channel):
            return Event.GONE
        self.log.info("channel.rolled_over", channel_id=channel.id)
        return Event.ROLLED_OVER

    def _on(self, got: SockEvent) -> Event | None:  # noqa: PLR0911 (one return per row of §5)
        sock, channel = got.sock, self.channel
        if channel is None or got.channel_id != channel.id:
            return None  # about a channel this slot has left
        if got.kind in ("gone", "switch_gone"):
            self._gone("404 frame" if got.kind == "gone" else "handshake 404")
            return Event.GONE
        if sock is None:
            return None
        if got.kind == "closing" and sock is self.current and self.state is ChannelState.OPEN:
            self.log.info("ws.closing_notice", channel_id=channel.id)
            self._switcher = asyncio.get_running_loop().create_task(self._switch(channel))
            return Event.CLOSING_NOTICE
        if got.kind == "switched" and self.state is ChannelState.SWITCHING:
            old, self.current = self.current, sock
            if old is not None:
                sockets.close(old, "Switching to a new socket")  # §5: within 5 s, here at once
            return Event.SWITCHED
        if got.kind == "ended" and sock is self.current:
            return self._ended(sock, got.code)
        return None

    def _ended(self, sock: Sock, code: int | None) -> Event:
        ending = classify_end(current=True, stopping=self.stopping.is_set(),
                              gone_frame=sock.gone_at is not None, dead=sock.dead, code=code)
        successor = self._successor(sock)
        if ending is Ending.REPLACED and successor is not None:
            # our own S' took the channel before its "switched" was read: 4000 "on a socket
            # it superseded: nothing" (§5); the switch is complete
            self.current = successor
            return Event.SWITCHED
        self.current = None
        if ending is Ending.REPLACED:
            self.log.warning("channel.replaced", channel_id=sock.channel_id)
            self._leave_channel()
        elif ending is Ending.GONE:
            self._gone("404 frame")
        self._cause = "socket_dead" if ending is Ending.DEAD else "socket_closed"
        return EVENTS[ending]

    def _successor(self, sock: Sock) -> Sock | None:
        """A socket of ours opened on the same channel after ``sock`` during a switch."""
        if self.state is not ChannelState.SWITCHING:
            return None
        return next((s for s in self.sockets if s.channel_id == sock.channel_id
                     and s.number > sock.number and not s.ended), None)

    async def _switch(self, channel: Channel) -> None:
        """S' on the same channel; until it opens S stays (§5: S' fails: keep S, retry)."""
        while True:
            await self._allowed()
            result = await sockets.dial_cancellable(self, channel.uri, self.host.tls)
            if isinstance(result, TypedConnection):
                sock = self._adopt(channel, result)
                self.events.put_nowait(SockEvent("switched", channel.id, sock))
                return
            if result == "gone":
                self.events.put_nowait(SockEvent("switch_gone", channel.id))
                return
            plan = self.policy.failure(self.clock())
            self.host.observe.reconnect_scheduled(Disposition(Action.RECONNECT,
                                                              "switch_failed"), plan)
            await self._sleep(plan.delay_s)

    # -- sockets (``genesys_cloud_socket.SocketHost``) ------------------------------------------
    def _adopt(self, channel: Channel, ws: TypedConnection) -> Sock:
        now = self.wall()
        self._numbers += 1
        sock = Sock(self._numbers, ws, channel.id, now, now)
        self.sockets.add(sock)
        # §6: covered from the later of the handshake and the PUT answer that permitted it
        start = max(now, channel.permitted_at or now)
        self.host.report(self.host.coverage.opened(self.index, sock.number, start))
        self.log.info("ws.connected", channel_id=channel.id, socket=sock.number)
        metrics.WS_CONNECTS.labels(self.stream.name).inc()
        sockets.start(self, sock)
        self.host.slot_changed()
        return sock

    def first_frame(self, sock: Sock) -> None:
        if not sock.first_seen:
            sock.first_seen = True
            self.host.observe.first_event(breaker_closed=self.policy.event())
            self.host.slot_changed()

    def frame_seen(self, sock: Sock, at: float) -> None:
        self.host.coverage.seen(self.index, sock.number, at)

    def gone_frame(self, sock: Sock) -> None:
        sock.gone_at = sock.last_frame
        self.host.report(self.host.coverage.closed(self.index, sock.number, sock.gone_at,
                                                   "channel_gone"))
        self.events.put_nowait(SockEvent("gone", sock.channel_id, sock))

    def socket_ended(self, sock: Sock, close_at: float | None, code: int | None,
                     reason: str) -> None:
        sock.ended = True
        self.sockets.discard(sock)
        ending = classify_end(current=sock is self.current, stopping=self.stopping.is_set(),
                              gone_frame=sock.gone_at is not None, dead=sock.dead, code=code)
        end = covered_until(close_frame_at=close_at, gone_frame_at=sock.gone_at,
                            last_frame_at=sock.last_frame, dead=sock.dead)
        self.host.report(self.host.coverage.closed(self.index, sock.number, end,
                                                   GAP_REASONS[ending]))
        self.log.info("ws.closed", code=code, reason=reason or None, cause=ending.value,
                      channel_id=sock.channel_id, socket=sock.number)
        self.events.put_nowait(SockEvent("ended", sock.channel_id, sock, code, reason))
        self.host.slot_changed()

    @property
    def open_socket(self) -> bool:
        return self.current is not None and not self.current.ended

    # -- helpers -----------------------------------------------------------------------------------
    def _channel(self) -> Channel:
        assert self.channel is not None, f"no channel in state {self.state.value}"
        return self.channel

    def _gone(self, cause: str) -> None:
        if self.channel is not None:
            self.log.warning("channel.gone", channel_id=self.channel.id, cause=cause)
        self._leave_channel()

    def _leave_channel(self) -> None:
        """Never use this channel again (§5): close what is still open on it."""
        for sock in list(self.sockets):
            sockets.close(sock, "Channel left")
        self.channel, self.current = None, None

    def close_all(self, reason: str) -> None:
        for sock in list(self.sockets):
            sockets.close(sock, reason)

    async def _wind_down(self) -> None:
        """Close every socket (SIGTERM: 1000 "Graceful shutdown") and wait for the readers."""
        if self._switcher is not None:
            self._switcher.cancel()
            await asyncio.gather(self._switcher, return_exceptions=True)
        self.close_all("Graceful shutdown")
        tasks = [t for sock in list(self.sockets) for t in sock.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.close_timeout_s * 2)

    async def _sleep(self, seconds: float) -> None:
        if not await self.stopping.sleep(seconds):
            raise StoppedError
