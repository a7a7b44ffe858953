"""Hypothesis-fuzzed frames through a real connection: the stream never stops, every bad frame
is in the DLQ with its reason, every event is in the raw topic.

A small scripted platform (aiohttp on loopback, Genesys flavour) sends the drawn frames, then a
marker event; the connector runs for real against it and the real broker.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any, Self

import orjson
import pytest
from aiohttp import WSMsgType, web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_conn_kafka import dedup_keys, make_config, read_all
from test_conn_platforms import frames
from test_conn_session import running, until

from ccstream import records
from connectors.platforms import FrameKind
from connectors.platforms.genesys import Genesys

pytestmark = pytest.mark.kafka

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


_examples = itertools.count()


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=25))
def test_fuzzed_frames_never_stop_the_stream(bootstrap: str, topic_prefix: str,
                                             script: list[tuple[bytes, bool]]) -> None:
    """Whatever the frames, one connection carries them all: bad ones to the DLQ with their
    reason and bytes, events to the raw topic, and the marker after them arrives."""
    asyncio.run(_scenario(bootstrap, f"{topic_prefix}.{next(_examples)}", script))


async def _scenario(bootstrap: str, prefix: str, script: list[tuple[bytes, bool]]) -> None:
    parsed = [Genesys().parse(raw, binary, 1_048_576) for raw, binary in script]
    bad = [p for p in parsed if p.kind is FrameKind.BAD]
    events = {p.dedup_key for p in parsed if p.kind is FrameKind.EVENT}
    async with ScriptedPlatform(script) as platform:
        base = f"http://127.0.0.1:{platform.port}"
        config = make_config(bootstrap, prefix, [{
            "name": "fz", "platform": "genesys", "client_id": "fz", "client_secret": "x",
            "url": f"ws://127.0.0.1:{platform.port}/api/v2/analytics/events",
            "token_url": f"{base}/oauth/token"}])
        async with running(config):
            marker_key = "test.marker|marker|2024-01-15T10:30:00.000Z"
            await until(lambda: _raw_has(bootstrap, config.topics.raw, events | {marker_key}),
                        timeout=30)
            dlq = await read_all(bootstrap, config.topics.dlq)
            assert platform.handshakes == 1
    assert len(dlq) == len(bad)
    got = sorted((records.header(r.headers, records.H_DLQ_REASON), _decoded(r)) for r in dlq)
    want = sorted((f.reason.encode(), f.raw) for f in bad)
    assert got == want


async def _raw_has(bootstrap: str, topic: str, keys: set[str]) -> bool:
    return keys <= dedup_keys(await read_all(bootstrap, topic))


def _decoded(record: Any) -> bytes:
    if records.header(record.headers, records.H_DLQ_ENCODING) == b"base64":
        return base64.b64decode(record.value)
    return bytes(record.value)
