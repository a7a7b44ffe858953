"""Maintenance windows against the simulator on loopback, with an in-memory sink.

Inside a declared window a stream that keeps dropping makes one probe per ``probe_interval_s``
(here with the jitter pinned at its middle, so exactly one per interval), reports
``maintenance``, and its breaker does not open; once the window is over the same failures count
again (the breaker opens); a stream that streams inside a window is left alone. Time is scaled:
a 300 s interval is 0.3 s here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from support.connector import FAST_CONNECTOR, SECRET, until
from support.memory_sink import MemorySink

from ccstream.config import ConnectorSettings, parse
from ccstream.logs import fields_of
from connectors.policy.ratelimit import TokenBucket
from connectors.sources.base import SourceDeps, SourceStatus
from connectors.sources.websocket import WebSocketSource
from simulator import ClientSpec, Fault, SimSettings, Simulator

INTERVAL = 0.3
SETTINGS = ConnectorSettings(**{**FAST_CONNECTOR, "max_attempts": 3,
                                "breaker_cooldown_s": 30.0})


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _source(sim: Simulator, http: aiohttp.ClientSession, sink: MemorySink,
            window: tuple[float, float]) -> WebSocketSource:
    start, end = window
    cfg = parse({"streams": [{
        "name": "g", "platform": "genesys", "url": sim.stream_url("genesys"),
        "token_url": sim.token_url, "client_id": "acme", "client_secret": SECRET}],
        "maintenance": [{"platform": "genesys", "start": _utc(start), "end": _utc(end),
                         "probe_interval_s": INTERVAL}]}, environ={})
    loop = asyncio.get_running_loop()
    deps = SourceDeps(sink, TokenBucket(100.0, 20, loop.time()), loop.time, time.time,
                      lambda: 0.5, http=http)  # jitter pinned: x 1.0 exactly
    return WebSocketSource(cfg.streams[0], SETTINGS, deps,  # type: ignore[arg-type]
                           maintenance=cfg.maintenance_for(cfg.streams[0]))


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [{**fields_of(r), "at": r.created} for r in caplog.records if r.getMessage() == name]


async def test_inside_a_window_a_dropped_stream_probes_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    """Every connection is reset as soon as it opens: inside the window that costs one
    handshake per interval and no breaker (cause ``maintenance``, status MAINTENANCE); after the
    window the same resets open the breaker within a few backoff delays."""
    caplog.set_level(logging.INFO)
    settings = SimSettings(clients=(ClientSpec("acme", SECRET, platforms=("genesys",)),), seed=3,
                           rate=20.0)
    async with Simulator(settings) as sim, aiohttp.ClientSession() as http:
        for _ in range(40):  # each fires once, on the next connection as soon as it opens
            sim.inject(Fault(kind="reset", client="acme"))
        now = time.time()
        window = (now - 1.0, now + 1.2)
        source = _source(sim, http, MemorySink(), window)
        statuses: list[SourceStatus] = []
        source.deps.on_change = lambda s: statuses.append(s.status)
        task = asyncio.create_task(source.run())
        await until(lambda: time.time() >= window[1])
        in_window = sim.stats["acme"].handshakes
        await until(lambda: source.status is SourceStatus.OPEN, timeout=10)
        source.stop()
        await asyncio.wait_for(task, 5)
    # 1.2 s of window at one probe per 0.3 s: the first connection and four probes at most
    assert 3 <= in_window <= 1 + round(1.2 / INTERVAL)
    assert SourceStatus.MAINTENANCE in statuses
    assert statuses.index(SourceStatus.OPEN) > len(statuses) - 1 - statuses[::-1].index(
        SourceStatus.MAINTENANCE)  # the breaker opened only after the window
    # each drop inside the window is one wait (the last handshake's drop may land after it)
    waits = _events(caplog, "maintenance.waiting")
    assert in_window - 1 <= len(waits) <= in_window
    assert all(w["dropped"] == "dropped" and w["at"] < window[1] + 0.1 for w in waits)
    probes = [e for e in _events(caplog, "ws.reconnect_scheduled") if e["cause"] == "maintenance"]
    assert len(probes) == len(waits)
    assert all(p["delay_s"] == pytest.approx(INTERVAL, abs=0.08) for p in probes)
    [opened] = _events(caplog, "breaker.opened")
    assert opened["at"] >= window[1] and opened["cause"] == "dropped"


async def test_a_stream_that_streams_inside_a_window_is_left_alone(
        caplog: pytest.LogCaptureFixture) -> None:
    """A window changes nothing for a connected stream: events flow, no maintenance wait."""
    caplog.set_level(logging.INFO)
    settings = SimSettings(clients=(ClientSpec("acme", SECRET, platforms=("genesys",)),), seed=3,
                           rate=50.0)
    async with Simulator(settings) as sim, aiohttp.ClientSession() as http:
        now = time.time()
        sink = MemorySink()
        source = _source(sim, http, sink, (now - 10.0, now + 600.0))
        task = asyncio.create_task(source.run())
        await until(lambda: len(sink.raw()) >= 20)
        assert source.status is SourceStatus.STREAMING
        source.stop()
        await asyncio.wait_for(task, 5)
    assert not _events(caplog, "maintenance.waiting")
