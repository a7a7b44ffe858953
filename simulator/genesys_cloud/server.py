"""The Genesys Cloud simulator process: one aiohttp server on loopback, its orgs, faults, clock.

See the package docstring for the API and the model. The REST handlers are ``rest.py``; one
WebSocket is ``streaming.SocketDriver``; every decision is made by the pure parts (channel board,
coverage, access, analytics, fault board), carried out here on a clock tick of ``tick_s``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

from aiohttp import web

from ccstream.logs import get_logger
from simulator.genesys_cloud import firing, frames, rest
from simulator.genesys_cloud.access import (
    RetryBook,
    RuleBook,
    SlidingWindow,
    TokenBook,
)
from simulator.genesys_cloud.analytics import ActivityStore, AnalyticsQuery
from simulator.genesys_cloud.board import GcFaultBoard
from simulator.genesys_cloud.channels import (
    Action,
    ChannelBoard,
)
from simulator.genesys_cloud.coverage import Coverage
from simulator.genesys_cloud.faults import GcFault, parse_fault, preset_schedule
from simulator.genesys_cloud.generator import Generator, Notification, Org
from simulator.genesys_cloud.model import new_uuid
from simulator.genesys_cloud.settings import GcClient, GcSettings
from simulator.genesys_cloud.stats import GcLedger, GcStats
from simulator.genesys_cloud.streaming import REORDER_HOLD_S, Out, SocketDriver, Streaming
from simulator.http import LoopbackServer, inject_faults, listen

UNKNOWN_CLIENT = "(unknown)"


class GenesysCloudSimulator(LoopbackServer):
    """Login, API and streaming on one loopback port; ``async with GenesysCloudSimulator(s)``."""

    settings: GcSettings

    def __init__(self, settings: GcSettings | None = None,
                 faults: Sequence[GcFault] = ()) -> None:
        self.settings = s = settings or GcSettings()
        self._clock = s.clock or time.time
        self.rng = random.Random(f"gc:{s.seed}")
        self.clients: dict[str, GcClient] = {}
        self.orgs: dict[str, Org] = {}
        self.stores: dict[str, ActivityStore] = {}
        self.generators: dict[str, Generator] = {}
        self.stats: dict[str, GcStats] = {}
        self.tokens = TokenBook(random.Random(f"gc-tokens:{s.seed}"))
        self.window = SlidingWindow(s.rate_limit, s.scaled(s.rate_window_s))
        self.retry = RetryBook()
        self.rules_book = RuleBook()
        self.board = ChannelBoard(
            ttl_s=s.scaled(s.channel_ttl_s), max_channels=s.max_channels,
            max_topics=s.max_topics, heartbeat_s=s.scaled(s.heartbeat_s),
            replace_grace_s=s.replace_grace_s, grace_duplicates=s.grace_duplicates,
            idle_close_s=None if s.idle_close_s is None else s.scaled(s.idle_close_s))
        self.coverage = Coverage()
        self.analytics = AnalyticsQuery(s.analytics_lag_s)
        self.faults = GcFaultBoard()
        self.ledger = GcLedger(self.coverage, self.stores)
        self.drivers: dict[str, SocketDriver] = {}
        self.injected: list[GcFault] = []
        self.failure: BaseException | None = None   # a background task died of this
        self._credit: dict[str, float] = {}
        self._generating = True
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._started = 0.0
        self.log = get_logger("ccstream.simulator.genesys_cloud")
        self.streaming = Streaming(self)
        self._initial = list(faults)
        for spec in s.clients:
            self.add_client(spec)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> GenesysCloudSimulator:
        app = web.Application()
        add = app.router.add_route
        add("POST", "/oauth/token", partial(rest.token, self))
        add("GET", "/api/v2/routing/queues", partial(rest.listing, self))
        add("GET", "/api/v2/users", partial(rest.listing, self))
        add("POST", "/api/v2/notifications/channels", partial(rest.create_channel, self))
        add("HEAD", "/api/v2/notifications/channels/{channel}", partial(rest.head_channel, self))
        for method in ("GET", "PUT", "POST"):
            add(method, "/api/v2/notifications/channels/{channel}/subscriptions",
                partial(rest.subscriptions, self))
        for kind in ("conversations", "users"):
            add("POST", f"/api/v2/analytics/{kind}/details/query", partial(rest.analytics, self))
        add("GET", "/channels/{channel}", self.streaming.handle)
        add("GET", "/_sim/stats", self._http_stats)
        add("GET", "/_sim/ledger", self._http_ledger)
        add("POST", "/_sim/faults", self._http_faults)
        add("*", "/api/{tail:.*}", partial(rest.not_found, self))
        self._runner, self._port = await listen(app, self.settings.host, self.settings.port)
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        now = self.now()
        for client_id in self.clients:
            self._start_generator(client_id, now)
        self._tasks.append(loop.create_task(self._tick_loop(), name="gc-tick"))
        if self.settings.preset:
            self._tasks.append(loop.create_task(self._run_preset(self.settings.preset),
                                                name="gc-preset"))
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        for fault in self._initial:
            self.inject(fault)
        self.log.info("sim.started", url=self.base_url, clients=sorted(self.clients),
                       preset=self.settings.preset, platform="genesys-cloud")
        return self

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # a background task that dies fails everything waiting on the simulator (wait_for)
        if not task.cancelled() and task.exception() is not None:
            self.failure = task.exception()
            self.log.error("sim.task_failed", task=task.get_name(), error=repr(self.failure))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        for driver in list(self.drivers.values()):  # 1001 going away: the simulator stops
            if driver.sock is not None and driver.sock.alive:
                self.execute(self.board.close(driver.sock, 1001, "going away"), self.now())
        await self.wait_for(lambda s: not s.drivers, timeout=3.0, fail=False)
        if self._runner is not None:
            await self._runner.cleanup()
        self.log.info("sim.stopped", url=self.base_url)

    async def __aenter__(self) -> GenesysCloudSimulator:
        return await self.start()

    def connect_uri(self, channel_id: str) -> str:
        return f"ws://{self.settings.host}:{self._port}/channels/{channel_id}"

    def now(self) -> float:
        """The server's clock (epoch seconds): the injected one, or the wall clock."""
        return self._clock()

    # -- clients and their orgs -----------------------------------------------------------------
    def add_client(self, spec: GcClient) -> None:
        self.clients[spec.client_id] = spec
        self.stats_of(spec.client_id)
        seed = self.settings.seed
        self.orgs[spec.client_id] = Org(spec, random.Random(f"gc-org:{seed}:{spec.client_id}"))
        self.stores[spec.client_id] = ActivityStore()
        if self._runner is not None:
            self._start_generator(spec.client_id, self.now())

    def _start_generator(self, client_id: str, now: float) -> None:
        if client_id not in self.generators:
            rng = random.Random(f"gc-gen:{self.settings.seed}:{client_id}")
            self.generators[client_id] = Generator(self.orgs[client_id], rng,
                                                   self.stores[client_id], now,
                                                   self.settings.max_conversations)

    def stats_of(self, client_id: str | None) -> GcStats:
        return self.stats.setdefault(client_id or UNKNOWN_CLIENT, GcStats())

    def queue_ids(self, client_id: str) -> list[str]:
        return list(self.orgs[client_id].queues)

    def user_ids(self, client_id: str) -> list[str]:
        return list(self.orgs[client_id].users)

    def rules(self, client_id: str) -> dict[str, int]:
        """The s.11 rule counters of a client: all 0 for a correct client."""
        return self.rules_book.of(client_id)

    def uncovered(self, client_id: str) -> list[tuple[float, float]]:
        """Server-view uncovered intervals followed by coverage (epoch seconds), merged."""
        return self.coverage.uncovered(client_id)

    def stop_generating(self, stop_faults: bool = True) -> None:
        """No more notifications (and, by default, no more scheduled or preset faults)."""
        self._generating = False
        if stop_faults:
            for task in self._tasks:
                if task.get_name() == "gc-preset":
                    task.cancel()
            for timer in self._timers:
                timer.cancel()

    def publish(self, note: Notification) -> int:
        """Write a notification on every socket listening to its topic now; the copies sent
        (0: nobody listened, it is gone: no replay)."""
        stats = self.stats_of(note.client_id)
        stats.notifications_published += 1
        targets = self.board.receivers(note.client_id, note.topic)
        if not targets:
            stats.notifications_dropped += 1
            return 0
        frame = note.frame(new_uuid(self.rng))
        for index, (_, sock) in enumerate(targets):
            driver = self.drivers.get(sock.id)
            if driver is not None:
                driver.notify(note.topic, frame)
                stats.duplicates_sent += index > 0
        return len(targets)

    # -- the clock tick -------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        last = self.now()
        while True:
            await asyncio.sleep(self.settings.tick_s)
            now = self.now()
            if self._generating:
                self._generate(now, min(max(0.0, now - last), 1.0))
            last = now
            self.tick(now)

    def _generate(self, now: float, elapsed: float) -> None:
        for client_id, generator in self.generators.items():
            rate = self.settings.client_rate(self.clients[client_id])
            credit = self._credit.get(client_id, 0.0) + rate * elapsed
            while credit >= 1.0:
                credit -= 1.0
                for note in generator.step(now):
                    self.publish(note)
            self._credit[client_id] = credit

    def tick(self, now: float) -> None:
        """Carry out everything due at ``now`` (expiries, closes, heartbeats, faults, rules)."""
        self.expire(now)
        for action in self.board.due(now):
            self.execute(action, now)
        for sock in self.board.overlaps(now):
            self.rules_book.count(sock.client_id, "socket_overlap")
            self.log.info("sim.rule_broken", client=sock.client_id, rule="socket_overlap",
                           channel=sock.channel_id)
        if self.faults.armed:
            firing.fire_armed(self, now)
        for driver in self.drivers.values():
            if driver.reorder_since is not None and now - driver.reorder_since > REORDER_HOLD_S:
                driver.flush_held()

    def expire(self, now: float) -> None:
        """Channels past their expiry go (404 frame, close 1000 on their sockets)."""
        expired, actions = self.board.expire(now)
        for channel in expired:
            self.stats_of(channel.client_id).channels_expired += 1
            self.touch(channel.client_id, now)
        for action in actions:
            self.execute(action, now)

    def execute(self, action: Action, now: float) -> None:
        sock = action.sock
        driver = self.drivers.get(sock.id)
        stats = self.stats_of(sock.client_id)
        if action.kind in ("close", "abort", "not_found"):
            self.touch(sock.client_id, now)
        if driver is None:
            return
        if action.kind == "heartbeat":
            stats.heartbeats_sent += 1
            driver.put(Out("frame", frames.HEARTBEAT))
        elif action.kind == "pong":
            stats.pongs += 1
            driver.put(Out("frame", frames.PONG))
        elif action.kind == "close":
            stats.closes_sent[action.code] += 1
            driver.close(action.code, action.reason)
        elif action.kind == "abort":
            stats.drops[action.reason] += 1
            driver.abort(reset=action.reason == "reset")
        elif action.kind == "not_found":
            stats.not_found_frames_sent += 1
            stats.closes_sent[1000] += 1
            driver.flush_held()
            driver.put(Out("frame", frames.not_found(sock.channel_id)))
            driver.close(1000)

    def touch(self, client_id: str, now: float | None = None) -> None:
        """Something changed coverage for this client: record it at ``now``."""
        self.coverage.update(client_id, self.board.covered(client_id),
                             self.now() if now is None else now)

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, fault: GcFault | dict[str, Any]) -> None:
        """Arm or carry out a fault (now, or ``fault.at_s`` real seconds after start)."""
        if not isinstance(fault, GcFault):
            fault = parse_fault(fault)
        if fault.at_s is not None and self._runner is not None:
            loop = asyncio.get_running_loop()
            delay = fault.at_s - (loop.time() - self._started)
            if delay > 0:
                self._timers.append(loop.call_later(delay, self.inject,
                                                    replace(fault, at_s=None)))
                return
        self.injected.append(fault)
        self.log.info("sim.fault_injected", fault=fault.to_dict())
        firing.arm(self, fault, self.now())

    async def _run_preset(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(f"gc:{name}:{self.settings.seed}")
        schedule = preset_schedule(name, rng, sorted(self.clients),
                                   self.settings.preset_interval_s)
        for fault in schedule:
            assert fault.at_s is not None
            await asyncio.sleep(max(0.0, self._started + fault.at_s - loop.time()))
            self.inject(replace(fault, at_s=None))

    async def wait_for(
        self, predicate: Callable[[GenesysCloudSimulator], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline: the documented test API)
        fail: bool = True,
    ) -> bool:
        """Poll ``predicate(self)`` until true; TimeoutError (with the counters) if it is not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            if self.failure is not None:
                raise RuntimeError("the simulator's background task failed") from self.failure
            if loop.time() >= deadline:
                if not fail:
                    return False
                raise TimeoutError(f"simulator condition not met in {timeout} s; "
                                   f"stats={self.snapshot()['clients']}")
            await asyncio.sleep(0.01)
        return True

    # -- observation ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /_sim/stats`` answers."""
        clients = {}
        for client_id, stats in self.stats.items():
            doc = stats.to_json()
            if client_id in self.clients:
                uncovered = self.uncovered(client_id)
                doc["rules"] = self.rules(client_id)
                doc["channels_live"] = len(self.board.live(client_id))
                doc["uncovered"] = [list(i) for i in uncovered]
                doc["uncovered_s"] = round(sum(b - a for a, b in uncovered), 3)
                doc["queues"], doc["users"] = len(self.orgs[client_id].queues), len(
                    self.orgs[client_id].users)
            clients[client_id] = doc
        return {"url": self.base_url, "platform": "genesys-cloud", "now": self.now(),
                "open_sockets": len(self.drivers), "clients": clients,
                "armed_faults": self.faults.pending(), "denied": self.faults.denials(),
                "injected_faults": len(self.injected)}

    async def _http_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _http_ledger(self, request: web.Request) -> web.Response:
        query = request.query

        def flag(name: str) -> bool:
            return query.get(name, "1") not in ("0", "false")

        return web.json_response(self.ledger.to_json(
            query.get("client"), flag("notifications"), flag("activity")))

    async def _http_faults(self, request: web.Request) -> web.Response:
        return await inject_faults(request, parse_fault, self.inject)

