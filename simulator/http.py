"""Serving a simulator's aiohttp app on loopback: the one place that reads the bound port.

aiohttp tells which port a site bound (port 0 = any free one) only through its private
``TCPSite._server``; every flavour listens through ``listen`` so that name is used once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from aiohttp import web

from simulator.scripts import FaultScriptError


async def listen(app: web.Application, host: str, port: int,
                 **runner_options: Any) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port``; the runner (``cleanup()`` stops it) and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    assert isinstance(server, asyncio.base_events.Server)
    return runner, int(server.sockets[0].getsockname()[1])


class LoopbackServer:
    """What every flavour's server shares: its bound port, its base URL, ``async with`` ending
    in ``stop()`` (each flavour's ``__aenter__`` returns its own started self)."""

    settings: Any   # the flavour's settings: ``host``
    _port: int

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self._port}"


async def inject_faults(request: web.Request, parse: Callable[[Mapping[str, Any]], Any],
                        inject: Callable[[Any], None]) -> web.Response:
    """``POST /_sim/faults``: a fault object or a list of them; all parsed before any is armed
    (one bad entry: 400 with the reason, nothing injected)."""
    try:
        body = await request.json()
        entries = body if isinstance(body, list) else [body]
        faults = [parse(entry) for entry in entries]
    except (ValueError, FaultScriptError) as err:
        return web.json_response({"error": str(err)}, status=400)
    for fault in faults:
        inject(fault)
    return web.json_response({"injected": len(faults)})
