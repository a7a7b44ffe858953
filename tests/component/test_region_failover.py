"""Regional failover against two simulators as two regions of one platform, on loopback.

The two simulators serve one shared event log (a tenant's data replicated across regions); each
has its own token endpoint (a token of one region is not valid in the other) and its own faults
and counters. A region outage (every socket reset, then 503 on the next handshakes) moves every
stream to the secondary and back to the primary once a probe answers, with nothing lost and the
herd rules of the integration guide (edge case 3) holding for the failover wave: salted jitter,
every attempt and probe under the per-host cap, no attempt before a Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import pytest
from support.connector import FAST_CONNECTOR, SECRET, until
from support.memory_sink import MemorySink

from ccstream import metrics, records
from ccstream.config import ConnectorSettings, parse
from ccstream.logs import fields_of
from connectors.policy.ratelimit import TokenBucket
from connectors.salt import instance_salt, salted_random
from connectors.sources.base import Shared, SourceDeps, SourceStatus
from connectors.sources.regions import endpoint_label
from connectors.sources.websocket import WebSocketSource
from simulator import ClientSpec, Fault, SimSettings, Simulator

STREAMS = 6
RATE, BURST = 20.0, 3
SETTINGS = ConnectorSettings(**{**FAST_CONNECTOR, "reconnects_per_second": RATE,
                                "reconnect_burst": BURST, "failover_after_attempts": 3,
                                "failback_probe_interval_s": 0.4, "max_attempts": 8})


class RecordingBucket(TokenBucket):
    """The per-host cap, remembering when each reservation lets its caller go."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        super().__init__(rate, burst, now)
        self.granted: list[float] = []

    def reserve(self, now: float) -> float:
        wait = super().reserve(now)
        self.granted.append(now + wait)
        return wait


CLIENTS = [f"tenant{i}" for i in range(STREAMS)]  # one credential per stream (a Retry-After
# is given to a client: one client per stream makes the simulator's "early" counter per stream)


def _regions() -> tuple[Simulator, Simulator]:
    def sim(seed: int) -> Simulator:
        specs = tuple(ClientSpec(c, SECRET, platforms=("genesys",)) for c in CLIENTS)
        return Simulator(SimSettings(clients=specs, seed=seed, rate=0.0, duplicate_rate=0.0))
    return sim(3), sim(4)


def _replicate(primary: Simulator, secondary: Simulator) -> None:
    """The secondary serves the primary's event logs (one tenant's data in both regions)."""
    for client in CLIENTS:
        secondary.streams["genesys", client] = primary.streams["genesys", client]


def _events(caplog: pytest.LogCaptureFixture, name: str, stream: str) -> list[dict[str, Any]]:
    return [{**fields_of(r), "at": r.created} for r in caplog.records
            if r.getMessage() == name and fields_of(r).get("stream") == stream]


async def _emit(primary: Simulator, stop: asyncio.Event) -> None:
    """The platform keeps producing through the outage: 5 events every 50 ms per tenant."""
    while not stop.is_set():
        for client in CLIENTS:
            primary.emit("genesys", client, 5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def test_a_region_outage_fails_over_and_back_with_nothing_lost(
        caplog: pytest.LogCaptureFixture) -> None:
    """Every stream moves to the secondary after three failed attempts, probes the primary,
    fails back (closing the secondary's socket first) once it answers, and has received every
    event of the shared log; every handshake and probe took a token of the per-host cap, and
    no attempt came before a Retry-After."""
    caplog.set_level(logging.INFO)
    primary, secondary = _regions()
    async with primary, secondary, aiohttp.ClientSession() as http:
        _replicate(primary, secondary)
        loop = asyncio.get_running_loop()
        bucket = RecordingBucket(RATE, BURST, loop.time())
        shared, salt, sink = Shared(), instance_salt(), MemorySink()
        names = [f"g{i}" for i in range(STREAMS)]
        cfg = parse({"streams": [{
            "name": name, "platform": "genesys", "client_id": client, "client_secret": SECRET,
            "endpoints": [
                {"url": primary.stream_url("genesys"), "token_url": primary.token_url},
                {"url": secondary.stream_url("genesys"), "token_url": secondary.token_url}],
        } for name, client in zip(names, CLIENTS, strict=True)]}, environ={})
        sources = [WebSocketSource(stream, SETTINGS, SourceDeps(  # type: ignore[arg-type]
            sink, bucket, loop.time, time.time, salted_random(salt, stream.name).random,
            http=http, shared=shared)) for stream in cfg.streams]
        stop_emitting = asyncio.Event()
        emitter = loop.create_task(_emit(primary, stop_emitting))
        tasks = [loop.create_task(s.run()) for s in sources]
        try:
            await until(lambda: all(s.status is SourceStatus.STREAMING for s in sources))
            # the outage: every socket reset, then each tenant's next handshakes (3 attempts and
            # a first probe) answered 503 with Retry-After
            for client in CLIENTS:
                primary.inject(Fault(kind="handshake_error", client=client, status=503, count=4))
            primary.inject(Fault(kind="mass_disconnect"))
            await until(lambda: all(s.regions.current == 1 for s in sources), timeout=20)
            await until(lambda: all(
                s.regions.current == 0 and s.status is SourceStatus.STREAMING
                and _events(caplog, "failover.switched", s.name)[-1]["reason"] == "failback"
                for s in sources), timeout=20)
            stop_emitting.set()
            await emitter
            logs = [primary.streams["genesys", c].log for c in CLIENTS]
            emitted = [{e.key for e in log.batch(log.first_seq, len(log))} for log in logs]
            await until(lambda: all(keys <= _received(sink, n)
                                    for keys, n in zip(emitted, names, strict=True)), timeout=10)
        finally:
            stop_emitting.set()
            for source in sources:
                source.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, emitter, return_exceptions=True), 10)

        a = [primary.stats[c] for c in CLIENTS]
        b = [secondary.stats[c] for c in CLIENTS]
        # every handshake at either region (probes included) went through the per-host cap ...
        assert len(bucket.granted) >= sum(s.handshakes for s in a + b)
        # ... which no second of the run exceeded, failover wave included
        for start in bucket.granted:
            assert sum(1 for t in bucket.granted if start <= t < start + 1.0) <= BURST + RATE + 1
        # no attempt nor probe before a Retry-After; each stream on the secondary, closed 1000
        assert [s.early_attempts for s in a + b] == [0] * (2 * STREAMS)
        assert all(s.handshakes_opened >= 1 and s.close_codes[1000] >= 1 for s in b)
        # the first probe of each stream was refused: the stream stayed and probed again
        assert all(s.handshake_rejections[503] == 4 for s in a)

    label_a, label_b = (endpoint_label(primary.stream_url("genesys")),
                        endpoint_label(secondary.stream_url("genesys")))
    switch_times = []
    for name in names:
        switches = _events(caplog, "failover.switched", name)
        assert [(s["source"], s["target"], s["reason"]) for s in switches[:1]] == [
            (label_a, label_b, "failures")]
        assert switches[-1]["reason"] == "failback"
        switch_times.append(switches[0]["at"])
        # never both at once: the secondary's socket closed before the primary's opened
        back_at = switches[-1]["at"]
        closed = [c for c in _events(caplog, "ws.closed", name) if c["cause"] == "failback"]
        opened = [c for c in _events(caplog, "ws.connected", name) if c["at"] >= back_at]
        assert closed and opened and closed[-1]["at"] <= opened[0]["at"]
        assert any(p["ok"] for p in _events(caplog, "failover.probe", name))
        assert metrics.STREAM_ENDPOINT.labels(name, label_a)._value.get() == 1
        assert metrics.STREAM_ENDPOINT.labels(name, label_b)._value.get() == 0
    # salted jitter: the streams did not fail over in lockstep
    assert max(switch_times) - min(switch_times) > 0.05


def _received(sink: MemorySink, stream: str) -> set[str]:
    return {s.headers[records.H_DEDUP_KEY] for s in sink.raw()
            if s.headers[records.H_STREAM] == stream}
