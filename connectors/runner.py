"""Every stream of one configuration in one process: start-up, cursor commits, shutdown.

The runner knows streams only as ``Source`` objects (``connectors.sources.base``): it never sees
a socket, a channel or a poll. Start-up: create missing topics, start the one producer, read
every stream's last cursor back from the cursor topic, build each stream's source with what the
sources of one process share (``Shared``: one token manager per credential, so N streams of one
tenant share one refresh; one per-host ``TokenBucket`` for every stream's reconnects).

Streams are isolated: each runs in its own task, a stream that fails stops alone, and the process
only gives up (exit non-zero, one line on stderr) when *every* stream has failed or has its
breaker open (``exit_when_all_open``).

Cursors: every ``cursor_commit_interval_s`` each source's ``checkpoint`` (which only covers
acknowledged records) is written when it changed, and once more at shutdown after the producer
is flushed.

Shutdown (SIGTERM/SIGINT, docs/kafka.md): stop reading, close every socket with 1000
"Graceful shutdown" and wait for the close (bounded by ``close_timeout_s``), flush the producer,
commit cursors, exit 0, all within ``grace_period_s``. A second signal exits at once.

Cluster mode (``[cluster] enabled = true``, docs/cluster.md) shares everything up to the sources
(topics, the one event producer, the metrics endpoint, ``SourceBuilder``: the per-credential token
managers and the per-host reconnect bucket) and hands over to ``connectors.cluster``: there the
streams run per owned slot, and their cursors go through each slot's transactional producer
instead of the commit loop below. Without the section nothing of that is loaded.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from ccstream import metrics
from ccstream.config import AnyStream, Config
from ccstream.logs import get_logger
from ccstream.probes import Probes
from ccstream.topics import contract_topics, ensure_topics
from connectors import sources
from connectors.kafka import cursor_store
from connectors.kafka.delivery import safe_error
from connectors.kafka.sink import KafkaSink
from connectors.policy.ratelimit import TokenBucket
from connectors.salt import instance_salt, salted_random
from connectors.sources.base import CursorBody, Shared, Sink, Source, SourceDeps, SourceStatus
from connectors.sources.proxy import client_session

EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str = ""  # the one line for stderr when ``code`` is not 0


class SourceBuilder:
    """What the sources of one process share, and the one way to build a stream's source.

    One token manager per credential and one Retry-After clock per client (``Shared``), one
    per-host ``TokenBucket`` for every stream's reconnects, one salt. In cluster mode a stream's
    source is built again each time its slot is taken over, with the same shared objects.
    """

    def __init__(self, config: Config, sink: Sink, http: aiohttp.ClientSession, *,
                 wall: Callable[[], float], on_change: Callable[[Source], None]) -> None:
        self.config = config
        self.sink = sink
        self.http = http
        self.wall = wall
        self.on_change = on_change
        self.loop = asyncio.get_running_loop()
        self.salt = instance_salt()
        self.limiter = TokenBucket(config.connector.reconnects_per_second,
                                   config.connector.reconnect_burst, self.loop.time())
        self.shared = Shared()
        self._warned: set[str] = set()

    def build(self, stream: AnyStream, stored: cursor_store.StoredCursor | None, *,
              sink: Sink | None = None, limiter: TokenBucket | None = None,
              on_change: Callable[[Source], None] | None = None
              ) -> tuple[Source, cursor_store.StoredCursor | None]:
        """``stream``'s source from its stored cursor (ignored if of another platform)."""
        log = get_logger("ccstream.connector", stream=stream.name, platform=stream.platform)
        if stream.name not in self._warned:
            self._warned.add(stream.name)
            for key in stream.inline_secrets():
                log.warning("config.inline_secret", key=key,
                            advice=f"use {key}_env: secrets in files leak into backups")
        cursor = _matching(stored, stream)
        deps = SourceDeps(sink or self.sink, limiter or self.limiter, self.loop.time, self.wall,
                          salted_random(self.salt, stream.name).random, http=self.http,
                          shared=self.shared, on_change=on_change or self.on_change)
        source = sources.build(stream, self.config, deps, cursor)
        log.info("stream.configured", resume=cursor.describe() if cursor else None)
        return source, cursor


class Runner:
    def __init__(self, config: Config, *, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self.settings = config.connector
        self.wall = wall
        self.log = get_logger("ccstream.connector")
        self.sink = KafkaSink(config.kafka, config.topics, config.connector.max_frame_bytes)
        self.sources: list[Source] = []
        self._stop = asyncio.Event()
        self._signals = 0
        self._committed: dict[str, CursorBody | None] = {}

    # -- control -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals > 1:
            # the operator insists: exit now, cursors stay at their last commit (safe, replays)
            self.log.warning("connector.forced_exit", signal=sig.name)
            os._exit(128 + sig.value)
        self.log.info("connector.stopping", signal=sig.name)
        self._stop.set()

    # -- run -----------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        if not self.config.streams:
            return Outcome(EXIT_FAILED, "no [[streams]] in the configuration")
        for stream in self.config.streams:  # ConfigError early: a secret's variable is unset
            sources.check_secrets(stream)
        await ensure_topics(self.config.kafka.bootstrap_servers, contract_topics(self.config))
        await self.sink.start()
        metrics_runner = None
        try:
            stored = ({} if self.config.cluster.enabled else await cursor_store.load(
                self.config.kafka.bootstrap_servers, self.config.topics.cursors))
            if self.config.metrics.port is not None:
                # /healthz and /readyz beside /metrics (docs/operations.md); in cluster mode a
                # member owning no stream yet is ready
                probes = Probes.for_kafka(
                    self.config.metrics, self.config.kafka,
                    lambda: {s.name: s.status.value for s in self.sources},
                    allow_empty=self.config.cluster.enabled)
                metrics_runner = await metrics.serve(self.config.metrics.host,
                                                     self.config.metrics.port, probes)
            async with client_session() as http:  # and its SOCKS sessions (sources.proxy)
                builder = SourceBuilder(self.config, self.sink, http, wall=self.wall,
                                        on_change=self._on_change)
                if self.config.cluster.enabled:
                    from connectors.cluster.supervisor import ClusterSupervisor

                    return await ClusterSupervisor(self, builder).run()
                self._build(stored, builder)
                return await self._supervise()
        finally:
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            await self.sink.stop()

    @property
    def stopping(self) -> asyncio.Event:
        """Set by a signal or ``request_stop()`` (cluster mode waits on it too)."""
        return self._stop

    def _build(self, stored: dict[str, cursor_store.StoredCursor],
               builder: SourceBuilder) -> None:
        for stream in self.config.streams:
            source, cursor = builder.build(stream, stored.get(stream.name))
            self._committed[stream.name] = cursor.body if cursor else None
            self.sources.append(source)

    async def _supervise(self) -> Outcome:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(s.run(), name=f"stream:{s.name}") for s in self.sources]
        committer = loop.create_task(self._commit_loop())
        every_done = loop.create_task(asyncio.wait(tasks))
        stop = loop.create_task(self._stop.wait())
        await asyncio.wait({stop, every_done}, return_when=asyncio.FIRST_COMPLETED)
        started = loop.time()
        outcome = self._failure_outcome()
        for source in self.sources:
            source.stop()
        committer.cancel()
        clean = await self._shutdown(tasks, started)
        for task in (stop, every_done, committer):
            task.cancel()
        await asyncio.gather(committer, stop, every_done, return_exceptions=True)
        if outcome is not None:
            return outcome
        if not clean:
            return Outcome(EXIT_FAILED, "shutdown incomplete: see the connector.shutdown log")
        return Outcome(EXIT_OK)

    def failure_outcome(self) -> Outcome | None:
        return self._failure_outcome()

    def _failure_outcome(self) -> Outcome | None:
        """Why the exit status is not 0: a stream stopped on a non-retriable error (even while
        others ran on), or every stream's breaker is open."""
        failed = [f"{s.fatal}" for s in self.sources if s.fatal]
        all_down = self._all_down()
        if not failed and not all_down:
            return None
        opened = [s.name for s in self.sources if all_down and s.status is SourceStatus.OPEN]
        parts = failed + ([f"circuit breaker open for {', '.join(opened)}"] if opened else [])
        return Outcome(EXIT_FAILED, "; ".join(parts) or "every stream stopped")

    def _all_down(self) -> bool:
        return bool(self.sources) and all(
            s.status in (SourceStatus.FAILED, SourceStatus.OPEN) for s in self.sources)

    def _on_change(self, source: Source) -> None:
        if source.status in (SourceStatus.FAILED, SourceStatus.OPEN) and self._all_down() and (
            self.settings.exit_when_all_open
            or all(s.status is SourceStatus.FAILED for s in self.sources)
        ):
            self.log.error("connector.giving_up", streams=len(self.sources))
            self._stop.set()

    async def _shutdown(self, tasks: list[asyncio.Task[None]], started: float) -> bool:
        """Close sockets, flush, commit: every step bounded by what is left of the grace period."""
        deadline = started + self.settings.grace_period_s - 0.5
        loop = asyncio.get_running_loop()
        clean = True
        steps: list[tuple[str, Callable[[], object]]] = [
            ("close", lambda: asyncio.gather(*tasks, return_exceptions=True)),
            ("flush", self.sink.flush),
            ("commit", self._commit_all),
        ]
        for step, start in steps:
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.05)):
                    await start()  # type: ignore[misc]
            except Exception as err:  # noqa: BLE001 (each step is bounded and reported)
                clean = False
                self.log.error("connector.shutdown", step=step, error=safe_error(err))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.log.info("connector.stopped", clean=clean,
                      seconds=round(loop.time() - started, 3))
        return clean

    # -- cursors -------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cursor_commit_interval_s)
            try:
                await self._commit_all()
            except Exception as err:  # noqa: BLE001 (the next interval tries again)
                self.log.error("cursor.commit_failed", error=safe_error(err))

    async def _commit_all(self) -> None:
        futures = []
        now = self.wall()
        for source in self.sources:
            body = source.checkpoint(now)
            if body is None or body == self._committed.get(source.name):
                continue
            value = cursor_store.encode(source.platform, body, now)
            futures.append((source, body, await self.sink.send_cursor(source.name, value)))
        for source, body, future in futures:
            await future
            self._committed[source.name] = body
            source.committed(body, now)
            metrics.CURSOR_COMMITS.labels(source.name).inc()
            get_logger("ccstream.connector", stream=source.name).info(
                "cursor.committed", resume=cursor_store.StoredCursor(
                    source.platform, body, "").describe())


def _matching(cursor: cursor_store.StoredCursor | None, stream: AnyStream
              ) -> cursor_store.StoredCursor | None:
    """The stored cursor, unless it belongs to another platform (a renamed stream)."""
    if cursor is None or cursor.platform == stream.platform:
        return cursor
    get_logger("ccstream.connector", stream=stream.name).warning(
        "cursor.ignored", stored_platform=cursor.platform)
    return None
