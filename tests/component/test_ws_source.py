"""The WebSocket source against the simulator on loopback, with an in-memory sink: no broker.

What the source does with its records and its cursor, apart from Kafka: records carry the
contract's headers, the checkpoint covers only acknowledged records, a stop closes with 1000, a
403 stops the stream with one line, and the token manager is single-flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from support.connector import FAST_CONNECTOR, SECRET, until
from support.memory_sink import MemorySink

from ccstream import records
from ccstream.config import ConnectorSettings, StreamConfig
from connectors.policy.ratelimit import TokenBucket
from connectors.sources.base import SourceDeps, SourceStatus
from connectors.sources.websocket import WebSocketSource
from connectors.tokens import TokenError, TokenManager
from simulator import ClientSpec, Fault, SimSettings, Simulator

SETTINGS = ConnectorSettings(**FAST_CONNECTOR)


def _stream(sim: Simulator, platform: str = "nice", client: str = "acme") -> StreamConfig:
    return StreamConfig(name=f"{platform}-s", platform=platform, url=sim.stream_url(platform),
                        token_url=sim.token_url, client_id=client, client_secret=SECRET)


async def _source(sim: Simulator, http: aiohttp.ClientSession, sink: MemorySink,
                  platform: str = "nice", client: str = "acme", **kw: Any) -> WebSocketSource:
    loop = asyncio.get_running_loop()
    deps = SourceDeps(sink, TokenBucket(100.0, 20, loop.time()), loop.time, time.time,
                      lambda: 0.5, http=http)
    return WebSocketSource(_stream(sim, platform, client), SETTINGS, deps, **kw)


def _sim(**kw: Any) -> Simulator:
    return Simulator(SimSettings(clients=(ClientSpec("acme", SECRET),), seed=3, **kw))


async def test_records_carry_the_headers_and_the_checkpoint_follows_acks() -> None:
    """Events reach the sink with the contract's headers; while the sink holds acknowledgements
    the checkpoint does not move, and once it acknowledges, the checkpoint is the last cursor."""
    async with _sim(rate=0) as sim, aiohttp.ClientSession() as http:
        sink = MemorySink(hold=True)
        source = await _source(sim, http, sink)
        task = asyncio.create_task(source.run())
        await until(lambda: source.status is SourceStatus.CONNECTING or source.connections)
        await until(lambda: source.connections == 1)
        sim.emit("nice", "acme", 5)
        await until(lambda: len(sink.raw()) >= 5)
        assert source.checkpoint(time.time()) is None  # nothing acknowledged yet
        sink.release()
        await until(lambda: source.checkpoint(time.time()) is not None)
        sent = sink.raw()
        last_cursor = sent[-1].headers[records.H_CURSOR]
        assert source.checkpoint(time.time()) == {"cursor": last_cursor}
        assert {s.headers[records.H_PLATFORM] for s in sent} == {"nice"}
        assert all(s.headers[records.H_DEDUP_KEY].count("|") == 2 for s in sent)
        source.stop()
        await asyncio.wait_for(task, 5)
        assert source.status is SourceStatus.STOPPED
        assert sim.stats["acme"].close_codes[1000] == 1


async def test_a_forbidden_stream_fails_with_one_line() -> None:
    """A 403 handshake stops the stream (FAILED) with a line naming it; no retry follows."""
    async with _sim(rate=0) as sim, aiohttp.ClientSession() as http:
        sim.inject(Fault(kind="handshake_error", client="acme", status=403))
        source = await _source(sim, http, MemorySink())
        await asyncio.wait_for(source.run(), 10)
        assert source.status is SourceStatus.FAILED
        assert source.fatal is not None and "nice-s" in source.fatal
        assert sim.stats["acme"].handshakes == 1


async def test_token_manager_is_single_flight_and_never_reuses_a_rejected_token() -> None:
    """Ten concurrent callers cost one token request; an invalidated token is never handed out
    again; wrong credentials are final and cost no further request."""
    async with _sim(rate=0) as sim, aiohttp.ClientSession() as http:
        manager = TokenManager(sim.token_url, "acme", SECRET, buffer_s=300.0, http=http,
                               clock=time.time)
        tokens = await asyncio.gather(*(manager.get() for _ in range(10)))
        assert len(set(tokens)) == 1 and sim.stats["acme"].token_requests == 1
        manager.invalidate(tokens[0])
        fresh = await manager.get()
        assert fresh != tokens[0] and sim.stats["acme"].token_requests == 2
        wrong = TokenManager(sim.token_url, "acme", "not-the-secret", buffer_s=300.0, http=http,
                             clock=time.time)
        for _ in range(2):
            with pytest.raises(TokenError) as err:
                await wrong.get()
            assert not err.value.retriable and err.value.error == "invalid_client"
        assert sim.stats["acme"].token_requests == 3  # the second call asked nobody


async def test_a_token_429_carries_its_retry_after() -> None:
    """A 429 from the token endpoint is retriable and says how long to wait."""
    async with _sim(rate=0) as sim, aiohttp.ClientSession() as http:
        sim.inject(Fault(kind="token_error", client="acme", status=429, retry_after=2.0))
        manager = TokenManager(sim.token_url, "acme", SECRET, buffer_s=300.0, http=http,
                               clock=time.time)
        with pytest.raises(TokenError) as err:
            await manager.get()
        assert err.value.retriable and err.value.status == 429
        assert err.value.retry_after_s == 2.0
