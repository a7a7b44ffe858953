"""The CXone simulator process: one aiohttp server on loopback, its tenants, clocks and faults.

See the package docstring for the API and the model. The answers are ``handlers.CxApi``; the
decisions are the pure modules'. Three clocks: the *steady* clock (``settings.clock``, default
the system's; Retry-After and token expiry are judged on it), the *server* clock on the wire
(steady + skew, in ms, never backwards), and the monotonic clock of the event loop (polls in
flight, stalls, generation ticks, fault times).
"""

from __future__ import annotations

import asyncio
import base64
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web

from ccstream.logs import get_logger
from simulator.cxone.board import CxBoard
from simulator.cxone.faults import (
    IMMEDIATE,
    CxFault,
    CxFaultKind,
    parse_fault,
    preset_schedule,
)
from simulator.cxone.handlers import TOKEN_PATH, CxApi
from simulator.cxone.ledger import CxLedger
from simulator.cxone.model import TenantModel
from simulator.cxone.rules import RuleBook
from simulator.cxone.settings import CxSettings, CxTenant
from simulator.cxone.stats import CxStats
from simulator.cxone.tokens import Grant, TokenBook
from simulator.http import LoopbackServer, inject_faults, listen

K = CxFaultKind


class CxoneSimulator(LoopbackServer):
    """NICE CXone discovery, tokens and Real-Time Data on one loopback port."""

    settings: CxSettings

    def __init__(self, settings: CxSettings | None = None, faults: Sequence[CxFault] = ()) -> None:
        self.settings = settings or CxSettings()
        seed = self.settings.seed
        self._clock: Callable[[], float] = self.settings.clock or time.time
        self._skew = self.settings.clock_skew_s
        self._server_ms = 0
        self.tenants: dict[str, CxTenant] = {t.access_key_id: t for t in self.settings.tenants}
        self.ledger = CxLedger()
        self.stats: dict[str, CxStats] = {}
        self.rule_book = RuleBook()
        self.board = CxBoard()
        self.injected: list[CxFault] = []
        self.openid_calls = 0
        self._token_rng = random.Random(f"cxone-tokens:{seed}")
        self.tokens = TokenBook(self._token_rng.getrandbits(256).to_bytes(32, "big"), "")
        self._fault_rng = random.Random(f"cxone-faults:{seed}")
        self._areas: dict[str, str] = {}
        self._old_bases: dict[str, dict[str, int]] = {}
        lag_ms = round(self.settings.scaled(self.settings.completion_lag_s) * 1000)
        for tenant in self.settings.tenants:
            key = tenant.access_key_id
            model = TenantModel(tenant.name, tenant.agents, tenant.skills,
                                random.Random(f"cxone-data:{seed}:{tenant.name}"),
                                now_ms=self.server_ms(), lag_ms=lag_ms)
            self.ledger.add(key, model)
            self.stats_of(key)
            self._areas[key] = self.settings.area
            self._old_bases[key] = {}
        self._initial = list(faults)
        self._api = CxApi(self)
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: list[asyncio.TimerHandle] = []
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._started = 0.0
        self._log = get_logger("ccstream.simulator.cxone")

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> CxoneSimulator:
        app = web.Application()
        app.on_response_prepare.append(self._date_header)
        app.router.add_get("/.well-known/openid-configuration", self._api.openid)
        app.router.add_get("/.well-known/cxone-configuration", self._api.configuration)
        app.router.add_post(TOKEN_PATH, self._api.token)
        app.router.add_get("/_sim/stats", self._http_stats)
        app.router.add_get("/_sim/ledger", self._http_ledger)
        app.router.add_post("/_sim/faults", self._http_faults)
        app.router.add_get("/{tail:.*}", self._api.api)
        # a client that closes its connection cancels the handler: the poll is no longer in
        # flight (contract s.9), and a held answer stops waiting
        self._runner, self._port = await listen(app, self.settings.host, self.settings.port,
                                                handler_cancellation=True)
        self.tokens.issuer = self.base_url
        loop = asyncio.get_running_loop()
        self._started = loop.time()
        self._tasks.append(loop.create_task(self._generate(), name="cxone-generate"))
        if self.settings.preset:
            self._tasks.append(loop.create_task(self._run_preset(self.settings.preset),
                                                name="cxone-preset"))
        for fault in self._initial:
            self.inject(fault)
        self._log.info("sim.started", url=self.base_url, platform="cxone",
                       access_keys=sorted(self.tenants), preset=self.settings.preset)
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for timer in self._timers:
            timer.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        self._log.info("sim.stopped", url=self.base_url, platform="cxone")

    async def __aenter__(self) -> CxoneSimulator:
        return await self.start()

    @property
    def token_url(self) -> str:
        return self.base_url + TOKEN_PATH

    # -- clocks ------------------------------------------------------------------------------
    def steady(self) -> float:
        """The server's steady clock (epoch s): Retry-After and token expiry."""
        return self._clock()

    def server_ms(self) -> int:
        """The clock on the wire (epoch ms): steady + skew, never backwards."""
        ms = math.floor((self._clock() + self._skew) * 1000)
        self._server_ms = max(self._server_ms, ms)
        return self._server_ms

    def mono(self) -> float:
        return time.monotonic()

    async def _date_header(self, _: web.Request, response: web.StreamResponse) -> None:
        moment = datetime.fromtimestamp(self.server_ms() / 1000, UTC)
        response.headers["Date"] = format_datetime(moment, usegmt=True)

    # -- tenants -----------------------------------------------------------------------------
    def stats_of(self, key: str) -> CxStats:
        return self.stats.setdefault(key, CxStats())

    def model(self, key: str) -> TenantModel:
        return self.ledger.models[key]

    def key_of_tenant(self, tenant_id: str | None) -> str | None:
        return next((k for k, t in self.tenants.items() if t.name == tenant_id), None)

    def area(self, key: str) -> str:
        return self._areas[key]

    def _prefix(self, area: str) -> str:
        return "" if area == self.settings.area else f"/api-{area}"

    def api_endpoint(self, key: str) -> str:
        """What cxone-configuration answers for the key's tenant now."""
        return self.base_url + self._prefix(self._areas[key])

    def base_status(self, key: str, prefix: str) -> int | None:
        """None if ``prefix`` is the key's current API base; else 401/404 (area_move)."""
        if key not in self._areas or prefix == self._prefix(self._areas[key]).lower():
            return None
        return self._old_bases[key].get(prefix, 404)

    @staticmethod
    def basic_credentials(header: str) -> tuple[str, str]:
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except ValueError:
            return "", ""
        return user, password

    def grant(self, tenant: CxTenant, client_id: str, expires_in_s: float,
              exp_s: float) -> Grant:
        """A token grant now (lifetimes in platform seconds)."""
        return self.tokens.issue(
            tenant.access_key_id, tenant=tenant.name, client_id=client_id,
            jti=f"{self._token_rng.getrandbits(64):016x}", steady_s=self.steady(),
            server_s=self.server_ms() / 1000, expires_in_s=self.settings.scaled(expires_in_s),
            exp_in_s=self.settings.scaled(exp_s))

    def rules(self, access_key: str) -> dict[str, int]:
        """Each client rule of contract s.9 -> how often ``access_key`` broke it (all 0)."""
        return self.rule_book.counts(access_key, self.mono())

    # -- data --------------------------------------------------------------------------------
    def step(self, access_key: str, action: str | None = None, n: int = 1) -> int:
        """Apply ``n`` changes to the key's tenant now (``action``: see model.ACTIONS, None =
        drawn); how many applied. Handy with ``rate=0``."""
        model = self.model(access_key)
        return sum(model.step(self.server_ms(), action) is not None for _ in range(n))

    def stop_generating(self, stop_faults: bool = True) -> None:
        """No more changes (and, by default, no more scheduled or preset faults)."""
        for task in self._tasks:
            if stop_faults or task.get_name() == "cxone-generate":
                task.cancel()
        if stop_faults:
            for timer in self._timers:
                timer.cancel()

    async def _generate(self) -> None:
        budget = dict.fromkeys(self.tenants, 0.0)
        last = self.mono()
        while True:
            await asyncio.sleep(self.settings.generate_tick_s)
            now = self.mono()
            for key, tenant in self.tenants.items():
                budget[key] += self.settings.tenant_rate(tenant) * (now - last)
                while budget[key] >= 1:
                    budget[key] -= 1
                    self.model(key).step(self.server_ms())
            last = now

    async def wait_for(
        self, predicate: Callable[[CxoneSimulator], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline: the documented test API)
    ) -> None:
        """Poll ``predicate(self)`` until true; TimeoutError (with the stats) if it is not."""
        deadline = self.mono() + timeout
        while not predicate(self):
            if self.mono() >= deadline:
                raise TimeoutError(f"simulator condition not met in {timeout} s; "
                                   f"stats={self.snapshot()['stats']}")
            await asyncio.sleep(0.01)

    # -- faults ------------------------------------------------------------------------------
    def inject(self, fault: CxFault | dict[str, Any]) -> None:
        """Arm or carry out a fault (now, or ``fault.at_s`` real seconds after start)."""
        if not isinstance(fault, CxFault):
            fault = parse_fault(fault)
        if fault.at_s is not None and self._runner is not None:
            delay = fault.at_s - (asyncio.get_running_loop().time() - self._started)
            if delay > 0:
                later = replace(fault, at_s=None)
                loop = asyncio.get_running_loop()
                self._timers.append(loop.call_later(delay, self.inject, later))
                return
        self.injected.append(fault)
        self._log.info("sim.fault_injected", fault=fault.to_dict())
        if fault.fault_kind in IMMEDIATE:
            keys = [k for k in self.tenants if fault.access_key in (None, k)]
            for key in keys:
                self._immediate(fault, key)
        else:
            self.board.arm(fault)

    def _immediate(self, fault: CxFault, key: str) -> None:
        kind = fault.fault_kind
        stats = self.stats_of(key)
        stats.faults[kind.value] += 1
        if kind is K.AREA_MOVE:
            old = self._prefix(self._areas[key]).lower()
            self._old_bases[key][old] = fault.status or 401
            self._areas[key] = fault.area or _next_area(self._areas[key], self._areas.values())
            self._old_bases[key].pop(self._prefix(self._areas[key]).lower(), None)
        elif kind is K.EXPIRE_TOKEN:
            self.tokens.expire_now(key)
        elif kind is K.CLOCK_SKEW:
            assert fault.skew_s is not None
            self._skew = fault.skew_s
        elif kind is K.COLLAPSE:
            stats.collapsed_versions += self.model(key).collapse(
                self.server_ms(), fault.rows or 2, fault.transitions or 3)

    async def _run_preset(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        schedule = preset_schedule(name, random.Random(f"cxone-preset:{name}:{self.settings.seed}"),
                                   sorted(self.tenants), self.settings.preset_interval_s)
        for fault in schedule:
            assert fault.at_s is not None
            await asyncio.sleep(max(0.0, self._started + fault.at_s - loop.time()))
            self.inject(replace(fault, at_s=None))

    # -- observation and control -------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything ``GET /_sim/stats`` answers."""
        tenants = {
            key: {"tenant": t.name, "area": self._areas[key],
                  "api_endpoint": self.api_endpoint(key),
                  "tokens_issued": self.tokens.issued(key), **self.model(key).counts()}
            for key, t in self.tenants.items()
        }
        return {
            "url": self.base_url, "platform": "cxone", "api_version": self.settings.api_version,
            "server_time": self.server_ms(), "clock_skew_s": self._skew,
            "discovery_openid": self.openid_calls, "tenants": tenants,
            "stats": {k: s.to_json() for k, s in self.stats.items()},
            "rules": {k: self.rules(k) for k in self.stats},
            "armed_faults": self.board.pending(), "injected_faults": len(self.injected),
        }

    async def _http_stats(self, _: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _http_ledger(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            min_s = float(query.get("min_outage_s", self.settings.outage_min_s))
        except ValueError:
            return web.json_response({"error": "min_outage_s is a number"}, status=400)
        return web.json_response(self.ledger.to_json(
            query.get("access_key"), query.get("rows", "0") not in ("0", "false"), min_s))

    async def _http_faults(self, request: web.Request) -> web.Response:
        return await inject_faults(request, parse_fault, self.inject)


def _next_area(area: str, taken: Any) -> str:
    """``na1`` -> ``na2`` (or the next one not in use)."""
    match = re.fullmatch(r"(.*?)(\d+)", area)
    stem, number = (match.group(1), int(match.group(2))) if match else (area + "-", 1)
    used = set(taken)
    while f"{stem}{number}" in used or f"{stem}{number}" == area:
        number += 1
    return f"{stem}{number}"
