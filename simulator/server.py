"""The simulator process: one aiohttp server on loopback, its streams, faults and counters.

See the package docstring for the API and the model. Handlers stay thin: the order of the
handshake checks is ``_admit`` (fault, maintenance, token, permission, limit), the token grants
are ``tokens.TokenBook``, the per-connection behaviour is ``connection.Connection``.

Two additions for cluster mode (docs/cluster.md): ``sim.owners`` (``GET /_sim/owners``,
``?stream=genesys/acme`` for one stream) is the timeline of every connection of every stream,
opened and closed, with the event-loop time, so a test sees how many clients held a stream at
any moment; and ``SimSettings.single_session`` (platforms) makes a new connection of a stream
close the older one with ``replaced_code`` (reason ``replaced``), as Genesys does.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from aiohttp import web

from ccstream.logs import get_logger
from simulator.board import UNKNOWN_CLIENT, FaultBoard
from simulator.connection import Admission, Connection
from simulator.events import decode_cursor, parse_rfc3339_ms
from simulator.faults import (
    ANSWER_KINDS,
    CONNECTION_KINDS,
    Fault,
    FaultKind,
    parse_fault,
    preset_schedule,
)
from simulator.http import LoopbackServer, inject_faults, listen
from simulator.ledger import ClientStats, Ledger, OwnersTimeline
from simulator.oauth import token_endpoint
from simulator.settings import PLATFORM_RULES, ClientSpec, Platform, SimSettings
from simulator.stream import Stream
from simulator.tokens import TokenBook, TokenState, peek_client


class Simulator(LoopbackServer):
    """Both platforms on one loopback port; ``async with Simulator(settings) as sim``."""

    settings: SimSettings

    def __init__(self, settings: SimSettings | None = None, faults: Sequence[Fault] = ()) -> None:
        self.settings = settings or SimSettings()
        self.ledger = Ledger()
        self.owners = OwnersTimeline()
        self.stats: dict[str, ClientStats] = {}
        self.streams: dict[tuple[Platform, str], Stream] = {}
        self.connections: set[Connection] = set()
        self.clients: dict[str, ClientSpec] = {}
        self._rng = random.Random(f"sim:{self.settings.seed}")
        self._tokens = TokenBook(random.Random(f"tokens:{self.settings.seed}"),
                                 self.settings.scaled(self.settings.refresh_token_lifetime_s))
        self._board = FaultBoard()
        self.injected: list[Fault] = []  # every fault armed or carried out, in order
        self._numbers: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._started = 0.0
        self._log = get_logger("ccstream.simulator")
        self._initial = list(faults)
        for spec in self.settings.clients:
            self.add_client(spec)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> Simulator:
        app = web.Application()
        app.router.add_post("/oauth/token", partial(token_endpoint, self))
        for platform, rules in PLATFORM_RULES.items():
            app.router.add_get(rules.path, self._stream_handler(platform))
        app.router.add_get("/_sim/stats", self._http_stats)
        app.router.add_get("/_sim/ledger", self._http_ledger)
        app.router.add_get("/_sim/owners", self._http_owners)
        app.router.add_post("/_sim/faults", self._http_faults)
        self._runner, self._port = await listen(app, self.settings.host, self.settings.port)
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._tasks.append(loop.create_task(self._generate(), name="sim-generate"))
        if self.settings.preset:
            self._tasks.append(loop.create_task(self._run_preset(self.settings.preset),
                                                name="sim-preset"))
        for fault in self._initial:
            self.inject(fault)
        self._log.info("sim.started", url=self.base_url, clients=sorted(self.clients),
                       preset=self.settings.preset)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        for conn in list(self.connections):  # 1001 going away: the simulator stops
            conn.post(Fault(FaultKind.MASS_DISCONNECT, code=1001))
        await self.wait_for(lambda s: not s.connections, timeout=3.0, fail=False)
        if self._runner is not None:
            await self._runner.cleanup()
        self._log.info("sim.stopped", url=self.base_url)

    async def __aenter__(self) -> Simulator:
        return await self.start()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token"

    def stream_url(self, platform: Platform) -> str:
        return f"ws://{self.settings.host}:{self._port}{PLATFORM_RULES[platform].path}"

    def now(self) -> float:
        """The server's clock: the injected clock plus the configured skew."""
        return self.settings.now()

    def _elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._started

    # -- clients, streams, events ---------------------------------------------------------------
    def add_client(self, spec: ClientSpec) -> None:
        """Register a client (a tenant): its credentials and one stream per allowed platform."""
        self.clients[spec.client_id] = spec
        self._client_stats(spec.client_id)
        rate = self.settings.rate if spec.rate is None else spec.rate
        for platform in spec.platforms:
            if (platform, spec.client_id) not in self.streams:
                ledger = self.ledger.stream(platform, spec.client_id)
                self.streams[platform, spec.client_id] = Stream(
                    platform, spec.client_id, rate, self.settings, ledger)

    def _client_stats(self, client_id: str | None) -> ClientStats:
        return self.stats.setdefault(client_id or UNKNOWN_CLIENT, ClientStats())

    def emit(self, platform: Platform, client_id: str, count: int) -> int:
        """Append ``count`` events to a stream now (for tests with ``rate=0``)."""
        return len(self.streams[platform, client_id].emit(count, self.now()))

    def stop_generating(self, stop_faults: bool = True) -> None:
        """No more live events (and, by default, no more scheduled or preset faults): what is
        retained can still be replayed, so a client can drain to a final, comparable state."""
        for task in self._tasks:
            if stop_faults or task.get_name() == "sim-generate":
                task.cancel()
        if stop_faults:
            for timer in self._timers:
                timer.cancel()

    async def _generate(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.settings.generate_tick_s)
            now = loop.time()
            server_now = self.now()
            for stream in self.streams.values():
                stream.tick(now - last, server_now)
            last = now

    async def wait_for(
        self, predicate: Callable[[Simulator], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline: the documented test API)
        fail: bool = True,
    ) -> bool:
        """Poll ``predicate(self)`` until true; TimeoutError (with the counters) if it is not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if loop.time() >= deadline:
                if not fail:
                    return False
                raise TimeoutError(f"simulator condition not met in {timeout} s; "
                                   f"stats={self.snapshot()['clients']}")
            await asyncio.sleep(0.01)
        return True

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, fault: Fault | dict[str, Any]) -> None:
        """Arm or carry out a fault (now, or ``fault.at_s`` real seconds after start)."""
        if not isinstance(fault, Fault):
            fault = parse_fault(fault)
        if fault.at_s is not None and self._runner is not None:
            delay = fault.at_s - self._elapsed()
            if delay > 0:
                later = replace(fault, at_s=None)
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(delay, self.inject, later))
                return
        kind = fault.fault_kind
        self.injected.append(fault)
        self._log.info("sim.fault_injected", fault=fault.to_dict())
        if kind in ANSWER_KINDS or kind in CONNECTION_KINDS:
            self._board.arm(fault)
            for conn in self.connections:
                conn.wake()
        else:
            self._global(fault)

    def _global(self, fault: Fault) -> None:
        kind = fault.fault_kind
        if kind is FaultKind.PURGE:
            for (platform, client_id), stream in self.streams.items():
                if fault.matches(client_id, platform):
                    stream.log.purge(fault.keep or 0)
                    self._client_stats(client_id).faults[kind.value] += 1
            return
        if kind is FaultKind.EXPIRE_TOKEN:
            for client_id in self.clients:
                if fault.matches(client_id, None):
                    self._tokens.revoke_client(client_id)
        if kind is FaultKind.MAINTENANCE:
            self._board.open_window(fault, self._mono())
        for conn in list(self.connections):
            if fault.matches(conn.client_id, conn.stream.platform):
                conn.post(fault)

    def take_fault(self, conn: Connection) -> Fault | None:
        """The armed connection fault due on ``conn`` now, if any (consumed)."""
        if not self._board.armed:
            return None
        fault = self._board.take_connection(conn.client_id, conn.stream.platform, conn.number,
                                            conn.events_sent)
        if fault is not None:
            self._log.info("sim.fault_fired", client=conn.client_id, connection=conn.number,
                           fault=fault.to_dict())
        return fault

    def _take_answer(self, kind: FaultKind, client_id: str | None, platform: Platform | None,
                     refresh: bool = False) -> Fault | None:
        fault = self._board.take_answer(kind, client_id, platform, refresh)
        if fault is not None:
            self._client_stats(client_id).faults[kind.value] += 1
        return fault

    def auth_closed(self, conn: Connection) -> None:
        # contract: "Tokens must never be reused after an auth close": from now on that token
        # is answered 401 and counted as a handshake with an expired token
        if conn.jti is not None:
            self._tokens.revoke(conn.jti)

    def retry_given(self, client_id: str, seconds: float) -> None:
        """A 1013 close told the client to wait: later handshakes sooner count as early."""
        self._board.promise_exact(client_id, "stream", seconds, self._mono())

    async def _run_preset(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        schedule = preset_schedule(name, random.Random(f"{name}:{self.settings.seed}"),
                                   sorted(self.clients), self.settings.preset_interval_s)
        for fault in schedule:
            assert fault.at_s is not None
            await asyncio.sleep(max(0.0, self._started + fault.at_s - loop.time()))
            self.inject(replace(fault, at_s=None))

    def _mono(self) -> float:
        return asyncio.get_running_loop().time()

    def _note_attempt(self, client_id: str | None, surface: str) -> bool:
        """Whether this attempt came before a Retry-After this client was given had elapsed."""
        return self._board.early(client_id, surface, self._mono())

    def _retry_after(self, client_id: str | None, surface: str, seconds: float) -> str:
        """Remember a Retry-After given out; the header value (whole seconds, rounded up)."""
        return str(self._board.promise(client_id, surface, seconds, self._mono()))

    # -- HTTP: stream endpoints -----------------------------------------------------------------
    def _stream_handler(self, platform: Platform) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.StreamResponse:
            admitted = self._admit(request, platform)
            if isinstance(admitted, web.Response):
                return admitted
            ws = web.WebSocketResponse(autoping=False, timeout=2.0, compress=False,
                                       max_msg_size=1 << 20)
            await ws.prepare(request)
            if isinstance(admitted, float):  # over the limit, limit_answer = "1013"
                stats = self._client_stats(peek_client(request.query.get("access_token")))
                stats.closes_sent[1013] += 1
                await ws.close(code=1013, message=f'{{"retry_after": {admitted}}}'.encode())
                return ws
            return await self._serve(request, ws, admitted)
        return handle

    async def _serve(self, request: web.Request, ws: web.WebSocketResponse,
                     admission: Admission) -> web.WebSocketResponse:
        conn = Connection(self, ws, request, admission)
        stats = admission.stats
        stats.open_connections += 1
        stats.max_open_connections = max(stats.max_open_connections, stats.open_connections)
        platform = conn.stream.platform
        if platform in self.settings.single_session:
            for older in self.connections:
                if older.client_id == conn.client_id and older.stream.platform == platform:
                    older.replace()
        self.connections.add(conn)
        name, peer = self.ledger.name(platform, conn.client_id), _peer(request)
        self.owners.opened(self._mono(), self.now(), name, conn.number, peer)
        log = self._log.bind(client=conn.client_id, platform=platform, connection=conn.number)
        log.info("ws.connected", start_seq=admission.start_seq)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            stats.open_connections -= 1
            self.owners.closed(self._mono(), self.now(), name, conn.number, peer)
            log.info("ws.closed", events=conn.events_sent, state=conn.state.value)
        return ws

    def _reject(self, stats: ClientStats, client_id: str | None, status: int,
                retry_after: float | None = None) -> web.Response:
        stats.handshake_rejections[status] += 1
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = self._retry_after(client_id, "stream", retry_after or 1.0)
        error = {401: "unauthorized", 403: "forbidden", 429: "too_many_connections",
                 503: "maintenance"}[status]
        return web.json_response({"error": error}, status=status, headers=headers)

    def _maintenance(self, client_id: str | None, platform: Platform) -> float | None:
        return self._board.maintenance(client_id, platform, self._mono())

    def _admit(self, request: web.Request,
               platform: Platform) -> web.Response | Admission | float:
        """The handshake answer: a rejection, an admission, or the 1013 retry delay."""
        token = request.query.get("access_token")
        client_id = peek_client(token)
        stats = self._client_stats(client_id)
        stats.handshakes += 1
        if self._note_attempt(client_id, "stream"):
            stats.early_handshakes += 1
        check = self._tokens.check(token, self.now())
        if check.state in (TokenState.EXPIRED, TokenState.REVOKED):
            stats.handshakes_expired_token += 1
        elif check.state is TokenState.INVALID:
            stats.handshakes_invalid_token += 1
        fault = self._take_answer(FaultKind.HANDSHAKE_ERROR, client_id, platform)
        if fault is not None:
            return self._reject(stats, client_id, fault.status or 503, fault.retry_after)
        maintenance = self._maintenance(client_id, platform)
        if maintenance is not None:
            return self._reject(stats, client_id, 503, maintenance)
        if check.state is not TokenState.VALID or check.client_id not in self.clients:
            return self._reject(stats, client_id, 401)
        assert check.client_id is not None and check.exp is not None
        if platform not in self.clients[check.client_id].platforms:
            return self._reject(stats, client_id, 403)
        if stats.open_connections >= self.settings.max_connections:
            return self._over_limit(stats, client_id)
        return self._admission(request, platform, check.client_id, check.jti, check.exp)

    def _over_limit(self, stats: ClientStats, client_id: str | None) -> web.Response | float:
        """Too many connections for the tenant: 429 Retry-After, or (as configured) the delay
        for a 1013 close right after the upgrade (contract: "beyond -> 429 or 1013")."""
        retry = self.settings.scaled(self.settings.limit_retry_after_s)
        if self.settings.limit_answer == "429":
            return self._reject(stats, client_id, 429, retry)
        self._retry_after(client_id, "stream", retry)
        return float(max(1, math.ceil(retry)))

    def _admission(self, request: web.Request, platform: Platform, client_id: str,
                   jti: str | None, exp: float) -> Admission:
        stream = self.streams[platform, client_id]
        stats = self._client_stats(client_id)
        query = request.query
        if platform == "genesys" and "since" in query:
            start, gap = stream.start_seq_since(parse_rfc3339_ms(query["since"]))
        elif platform == "nice" and "cursor" in query:
            seq = decode_cursor(query["cursor"], stream.factory.tag)
            rewind = self.settings.nice_rewind_max
            start, gap = stream.start_seq_cursor(seq, lambda: self._rng.randint(0, rewind))
        else:
            start, gap = stream.log.next_seq, False  # no resume point: live only
        if gap:
            stats.gaps_served += 1
        types = frozenset(t for t in query.get("types", "").split(",") if t)
        self._numbers[client_id] += 1
        stats.handshakes_opened += 1
        return Admission(stream, stats, self._numbers[client_id], jti, exp, types, start)

    # -- HTTP: control and observation ----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /_sim/stats`` answers."""
        streams = {
            self.ledger.name(platform, client_id): {
                "retained": len(s.log), "first_seq": s.log.first_seq,
                "next_seq": s.log.next_seq, "generated": s.ledger.generated,
                "emitted": len(s.ledger.hashes), "evicted_unsent": s.log.evicted_unsent,
                "listeners": len(s.listeners), "rate": s.rate,
            }
            for (platform, client_id), s in self.streams.items()
        }
        return {
            "url": self.base_url, "open_connections": len(self.connections),
            "clients": {c: s.to_json() for c, s in self.stats.items()},
            "streams": streams,
            "armed_faults": self._board.pending(),
            "injected_faults": len(self.injected),
        }

    async def _http_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _http_ledger(self, request: web.Request) -> web.Response:
        stream = request.query.get("stream")
        with_events = request.query.get("events", "1") not in ("0", "false")
        return web.json_response(self.ledger.to_json(stream, with_events))

    async def _http_owners(self, request: web.Request) -> web.Response:
        return web.json_response(self.owners.to_json(request.query.get("stream")))

    async def _http_faults(self, request: web.Request) -> web.Response:
        return await inject_faults(request, parse_fault, self.inject)


def _peer(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
