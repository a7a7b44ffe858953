"""Whole-process tests: ``ccstream connect`` as a real subprocess, SIGTERM and kill -9.

The simulator runs in the test's event loop; the connector process talks to it and to the real
broker over loopback. Every process started here is stopped by its pid in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support.connector import FAST_CONNECTOR, SECRET, dedup_keys, read_all, until
from support.scripted import ScriptedServer

from ccstream import records
from ccstream.timefmt import parse_rfc3339 as parse_timestamp
from connectors.kafka import cursor_store
from simulator import ClientSpec, SimSettings, Simulator

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

GRACE_S = FAST_CONNECTOR["grace_period_s"]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def write_config(path: Path, bootstrap: str, prefix: str, sim: Simulator) -> Path:
    lines = [f'[kafka]\nbootstrap_servers = "{bootstrap}"\npartitions = 2\n',
             f'[topics]\nraw = "{prefix}.raw"\nclean = "{prefix}.clean"\n'
             f'cursors = "{prefix}.cursors"\ndlq = "{prefix}.dlq"\n',
             "[connector]", *(f"{k} = {toml_value(v)}" for k, v in FAST_CONNECTOR.items()),
             '\n[log]\nlevel = "INFO"\n']
    for name, platform, client in (("g", "genesys", "acme"), ("n", "nice", "other")):
        lines.append(
            f'[[streams]]\nname = "{name}"\nplatform = "{platform}"\n'
            f'url = "{sim.stream_url(platform)}"\ntoken_url = "{sim.token_url}"\n'  # type: ignore[arg-type]
            f'client_id = "{client}"\nclient_secret_env = "TEST_CONN_SECRET"\n')
    path.write_text("\n".join(lines))
    return path


@asynccontextmanager
async def connector(config: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "connect", "--config", str(config),
            env={**os.environ, "TEST_CONN_SECRET": SECRET}, stdout=sink, stderr=sink)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def two_tenants() -> Simulator:
    clients = (ClientSpec("acme", SECRET, platforms=("genesys",)),
               ClientSpec("other", SECRET, platforms=("nice",)))
    return Simulator(SimSettings(clients=clients, seed=11, rate=30.0, duplicate_rate=0.0))


async def everything_in_raw(bootstrap: str, prefix: str, sim: Simulator) -> bool:
    got = dedup_keys(await read_all(bootstrap, f"{prefix}.raw"))
    emitted = sim.ledger.keys("genesys", "acme") | sim.ledger.keys("nice", "other")
    return bool(emitted) and emitted <= got


async def test_sigterm_closes_cleanly_flushes_and_commits(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """SIGTERM: a 1000 close frame from every connection, exit 0 within the grace period, and
    the cursor topic holds the last acknowledged position of each stream."""
    async with two_tenants() as sim:
        config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, sim)
        log = tmp_path / "connector.log"
        async with connector(config, log) as proc:
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 30
                               and s.stats["other"].events_sent >= 30, timeout=60)
            loop = asyncio.get_running_loop()
            proc.send_signal(signal.SIGTERM)
            started = loop.time()
            code = await asyncio.wait_for(proc.wait(), GRACE_S + 10)
            elapsed = loop.time() - started
        assert code == 0, log.read_text()[-3000:]
        assert elapsed < GRACE_S
        for client in ("acme", "other"):
            stats = sim.stats[client]
            assert stats.close_codes[1000] == stats.handshakes_opened >= 1
        raw = await read_all(bootstrap, f"{topic_prefix}.raw")
        stored = await cursor_store.load(bootstrap, f"{topic_prefix}.cursors")
        by_key = {records.header(r.headers, records.H_DEDUP_KEY).decode(): r for r in raw}
        last_nice = by_key[sim.ledger.stream("nice", "other").order[-1]]
        assert stored["n"].value == records.header(last_nice.headers, records.H_CURSOR).decode()
        last_ts = sim.ledger.stream("genesys", "acme").order[-1].split("|")[2]
        since = parse_timestamp(stored["g"].value)
        newest = parse_timestamp(last_ts)
        assert since is not None and newest is not None
        assert newest - 30.0 - 0.002 <= since <= newest  # newest acknowledged minus lateness
        assert SECRET not in log.read_text()


async def test_kill_9_and_restart_loses_nothing(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """kill -9 mid-stream, restart: every event the simulator emitted is in the raw topic."""
    async with two_tenants() as sim:
        config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, sim)
        log = tmp_path / "connector.log"
        async with connector(config, log) as proc:
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 40
                               and s.stats["other"].events_sent >= 40, timeout=60)
            proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGKILL
        await asyncio.sleep(0.5)  # events keep being emitted while nobody listens
        async with connector(config, log) as proc:
            opened = {c: sim.stats[c].handshakes_opened for c in ("acme", "other")}
            await sim.wait_for(lambda s: all(s.stats[c].handshakes_opened > opened[c]
                                             for c in opened), timeout=60)
            await until(lambda: everything_in_raw(bootstrap, topic_prefix, sim), timeout=30)
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), GRACE_S + 10) == 0
        assert await everything_in_raw(bootstrap, topic_prefix, sim)


class CloseIgnoringPlatform(ScriptedServer):
    """A Genesys-flavoured endpoint that sends one event, then never answers a close frame:
    a connector's graceful shutdown waits on it for ``close_timeout_s``."""

    shutdown_timeout_s = 0.5

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.Event()

    async def stream(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoclose=False, autoping=False)
        await ws.prepare(request)
        await ws.send_str('{"eventType": "test.one", "correlationId": "c1", '
                          '"timestamp": "2024-01-15T10:30:00.000Z", "eventBody": {}}')
        self.opened.set()
        await asyncio.sleep(3600)  # never reads: no close frame goes back
        return ws


async def test_second_signal_exits_at_once(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A second SIGTERM while the graceful shutdown still waits (here on a platform that
    never answers the close frame) exits at once, saying so, without waiting for the rest."""
    async with CloseIgnoringPlatform() as platform:
        connector_settings = {**FAST_CONNECTOR, "close_timeout_s": 60.0, "grace_period_s": 90.0}
        config = tmp_path / "c.toml"
        config.write_text("\n".join([
            f'[kafka]\nbootstrap_servers = "{bootstrap}"\npartitions = 1\n',
            f'[topics]\nraw = "{topic_prefix}.raw"\nclean = "{topic_prefix}.clean"\n'
            f'cursors = "{topic_prefix}.cursors"\ndlq = "{topic_prefix}.dlq"\n',
            "[connector]", *(f"{k} = {toml_value(v)}" for k, v in connector_settings.items()),
            '\n[[streams]]\nname = "hang"\nplatform = "genesys"\n'
            f'url = "ws://127.0.0.1:{platform.port}/api/v2/analytics/events"\n'
            f'token_url = "http://127.0.0.1:{platform.port}/oauth/token"\n'
            'client_id = "c"\nclient_secret_env = "TEST_CONN_SECRET"\n']))
        log = tmp_path / "connector.log"
        async with connector(config, log) as proc:
            await asyncio.wait_for(platform.opened.wait(), 60)
            await until(lambda: "ws.connected" in log.read_text(), timeout=30)
            proc.send_signal(signal.SIGTERM)
            await until(lambda: "connector.stopping" in log.read_text(), timeout=10)
            # still shutting down: the close handshake has 60 s and gets no answer
            assert proc.returncode is None
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 128 + signal.SIGTERM.value
        assert "connector.forced_exit" in log.read_text()
        assert "connector.stopped" not in log.read_text()
