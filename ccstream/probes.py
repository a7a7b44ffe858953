"""Health probes on the metrics port: ``/healthz`` (alive) and ``/readyz`` (doing its job).

docs/operations.md, "Health probes". Both answer JSON, 200 or 503, at once: nothing slow runs in
a request (a Kubernetes probe's default timeout is one second).

* ``/healthz``: the process answers and its event loop is not stuck. A watchdog task sleeps a
  short tick and measures how late it woke (``ccstream_event_loop_lag_seconds``); a lag above
  ``max_loop_lag_s`` (a blocking call, a CPU-starved pod) answers 503. A loop that is stuck for
  good answers nothing at all, which a probe counts as a failure too.
* ``/readyz``: Kafka is reachable (checked in the background every ``kafka_check_interval_s``
  with the admin client: a metadata round trip, nothing written) and every stream is streaming
  or in a declared state (``maintenance``), or was so less than ``ready_grace_s`` ago (a planned
  reconnect does not flap the pod). A failed stream, a stream whose breaker is open, or one that
  has not streamed yet make the process not ready, each named in ``reasons``.

The verdicts are pure functions (``loop_healthy``, ``readiness``); ``Probes`` samples the
facts (the loop, Kafka, the streams' statuses from a callable the runner gives) and serves them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ccstream import metrics
from ccstream.config import KafkaSettings, MetricsSettings
from ccstream.logs import get_logger

# the states a stream may be in and still count as doing its job (a source's status values)
READY_STATES = frozenset({"streaming", "maintenance"})

Statuses = Callable[[], Mapping[str, str]]     # stream name -> status value ("streaming", ...)
KafkaCheck = Callable[[], Awaitable[str | None]]  # None: reachable; else why not


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()


def loop_healthy(lag_s: float, max_lag_s: float) -> Verdict:
    """The event loop's verdict from the watchdog's last measured lag."""
    if lag_s > max_lag_s:
        return Verdict(False, (f"event loop lagged {lag_s:.3f} s > {max_lag_s} s",))
    return Verdict(True)


def readiness(statuses: Mapping[str, str], last_ready: Mapping[str, float],
              kafka_error: str | None, now: float, grace_s: float, *,
              allow_empty: bool = False) -> Verdict:
    """Ready when Kafka is reachable and every stream is, or was within ``grace_s``, in a
    ready state; ``kafka_error`` is the last Kafka check's problem (None: reachable)."""
    reasons: list[str] = []
    if kafka_error is not None:
        reasons.append(f"kafka: {kafka_error}")
    if not statuses and not allow_empty:
        reasons.append("no stream is running yet")
    for name, status in sorted(statuses.items()):
        if status in READY_STATES:
            continue
        seen = last_ready.get(name)
        if status not in ("failed", "stopped", "open") and seen is not None and \
                now - seen <= grace_s:
            continue
        reasons.append(f"stream {name}: {status}")
    return Verdict(not reasons, tuple(reasons))


async def kafka_metadata(kafka: KafkaSettings, timeout_s: float) -> str | None:
    """One metadata round trip with the admin client (nothing written): None when Kafka
    answered, else the problem in one line."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers,
                                client_id=f"{kafka.client_id}-probe",
                                request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.describe_cluster()
    except Exception as err:  # noqa: BLE001 (any failure means: not reachable, said in one line)
        return f"{kafka.bootstrap_servers} unreachable ({type(err).__name__})"
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return None


@dataclass
class Probes:
    """What ``/healthz`` and ``/readyz`` report; ``install(app)`` adds the routes and starts
    the watchdog and the Kafka check with the app (stopped with it)."""

    settings: MetricsSettings
    statuses: Statuses
    kafka: KafkaCheck
    allow_empty: bool = False       # cluster mode: an instance owning no stream may be ready
    lag_s: float = 0.0
    kafka_error: str | None = "not checked yet"
    last_ready: dict[str, float] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def for_kafka(cls, settings: MetricsSettings, kafka: KafkaSettings, statuses: Statuses,
                  allow_empty: bool = False) -> Probes:
        """Probes whose Kafka check is ``kafka_metadata`` against ``kafka``."""
        timeout = min(settings.kafka_check_interval_s, kafka.request_timeout_s)
        return cls(settings, statuses, lambda: kafka_metadata(kafka, timeout), allow_empty)

    @property
    def tick_s(self) -> float:
        return min(0.5, self.settings.max_loop_lag_s / 4)

    def install(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)

    # -- verdicts --------------------------------------------------------------------------------
    def health(self) -> Verdict:
        return loop_healthy(self.lag_s, self.settings.max_loop_lag_s)

    def ready(self) -> Verdict:
        now = asyncio.get_running_loop().time()
        statuses = dict(self.statuses())
        self._note(statuses, now)
        verdict = readiness(statuses, self.last_ready, self.kafka_error, now,
                            self.settings.ready_grace_s, allow_empty=self.allow_empty)
        metrics.READY.set(1 if verdict.ok else 0)
        return verdict

    def _note(self, statuses: Mapping[str, str], now: float) -> None:
        for name, status in statuses.items():
            if status in READY_STATES:
                self.last_ready[name] = now
        for name in set(self.last_ready) - set(statuses):
            del self.last_ready[name]  # a stream no longer run here (cluster: slot moved)

    # -- HTTP ------------------------------------------------------------------------------------
    async def _healthz(self, _: web.Request) -> web.Response:
        verdict = self.health()
        return _answer(verdict, {"healthy": verdict.ok, "loop_lag_s": round(self.lag_s, 4)})

    async def _readyz(self, _: web.Request) -> web.Response:
        verdict = self.ready()
        return _answer(verdict, {"ready": verdict.ok, "kafka": self.kafka_error or "ok",
                                 "streams": dict(self.statuses())})

    # -- background --------------------------------------------------------------------------------
    async def _start(self, _: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch(), name="probe-watchdog"),
                       loop.create_task(self._check_kafka(), name="probe-kafka")]

    async def _stop(self, _: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _watch(self) -> None:
        loop, log = asyncio.get_running_loop(), get_logger("ccstream.probes")
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            self.lag_s = max(0.0, loop.time() - due)
            metrics.LOOP_LAG.set(self.lag_s)
            if self.lag_s > self.settings.max_loop_lag_s:
                log.warning("probe.loop_lag", lag_s=round(self.lag_s, 3),
                            max_loop_lag_s=self.settings.max_loop_lag_s)
            self._note(dict(self.statuses()), loop.time())

    async def _check_kafka(self) -> None:
        log = get_logger("ccstream.probes")
        while True:
            error = await self.kafka()
            if error != self.kafka_error:
                if error is None:
                    log.info("probe.kafka_reachable")
                else:
                    log.warning("probe.kafka_unreachable", error=error)
            self.kafka_error = error
            await asyncio.sleep(self.settings.kafka_check_interval_s)


def _answer(verdict: Verdict, body: dict[str, Any]) -> web.Response:
    return web.json_response({**body, "reasons": list(verdict.reasons)},
                             status=200 if verdict.ok else 503)
