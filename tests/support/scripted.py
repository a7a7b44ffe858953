"""A scripted loopback WebSocket server: frames in a given order, then what the test needs."""

from __future__ import annotations

from typing import Any, Self

import orjson
from aiohttp import WSMsgType, web

MARKER = orjson.dumps({"eventType": "test.marker", "correlationId": "marker",
                       "timestamp": "2024-01-15T10:30:00.000Z", "eventBody": {}})


class ScriptedServer:
    """A real Genesys-flavoured endpoint on loopback for tests that script the server side:
    answers every token request; subclasses write ``stream``."""

    shutdown_timeout_s = 60.0

    def __init__(self) -> None:
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def token(self, _: web.Request) -> web.Response:
        return web.json_response({"access_token": "opaque-test-token", "expires_in": 3600})

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/api/v2/analytics/events", self.stream)
        self.runner = web.AppRunner(app, access_log=None,
                                    shutdown_timeout=self.shutdown_timeout_s)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *_: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


class ScriptedPlatform(ScriptedServer):
    """Sends ``script`` then the marker on each connection."""

    def __init__(self, script: list[tuple[bytes, bool]]) -> None:
        super().__init__()
        self.script = script
        self.handshakes = 0

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        self.handshakes += 1
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        for raw, binary in self.script:
            if binary:
                await ws.send_bytes(raw)
            else:
                # raw bytes as a TEXT frame, invalid UTF-8 included (send_str would encode)
                await ws.send_frame(raw, WSMsgType.TEXT)
        await ws.send_str(MARKER.decode())
        async for _ in ws:  # hold the connection, answer pings, until the client closes
            pass
        return ws
