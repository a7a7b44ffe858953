"""One stream's metrics and log lines, in one place: what a source reports, said once.

A source driver calls the observer (``observer.connected(...)``) instead of touching Prometheus
children and log calls itself, so every report has one definition, its metrics move with its log
line, and the vocabulary (README, "Log vocabulary and metrics") is kept here.
"""

from __future__ import annotations

from collections.abc import Callable

from ccstream import metrics
from ccstream.logs import BoundLogger, get_logger
from ccstream.timefmt import rfc3339
from connectors.policy.close_codes import Disposition
from connectors.policy.gaps import Gap
from connectors.policy.retry import Plan


class StreamObserver:
    def __init__(self, name: str, platform: str) -> None:
        self.name = name
        self.log: BoundLogger = get_logger("ccstream.connector", stream=name, platform=platform)
        # every per-stream series exists from the start (a scrape shows 0, not nothing)
        for counter in (metrics.GAPS, metrics.EVENTS_IN, metrics.EVENTS_PRODUCED,
                        metrics.HEARTBEATS, metrics.WS_CONNECTS, metrics.CURSOR_COMMITS):
            counter.labels(name)
        for gauge in (metrics.BREAKER_STATE, metrics.BACKOFF_CURRENT, metrics.STREAM_FAILED,
                      metrics.STREAM_CONNECTED):
            gauge.labels(name).set(0)

    def event_age(self, age: Callable[[], float]) -> None:
        metrics.LAST_EVENT_AGE.labels(self.name).set_function(age)

    # -- connection ------------------------------------------------------------------------------
    def connected(self, resume: str | None, connection: int) -> None:
        metrics.WS_CONNECTS.labels(self.name).inc()
        metrics.STREAM_CONNECTED.labels(self.name).set(1)
        self.log.info("ws.connected", resume=resume, connection=connection)

    def disconnected(self) -> None:
        metrics.STREAM_CONNECTED.labels(self.name).set(0)

    def closed(self, code: int | None, reason: str | None, cause: str) -> None:
        self.log.info("ws.closed", code=code, reason=reason, cause=cause)

    def handshake_rejected(self, status: int, disposition: Disposition) -> None:
        self.log.warning("ws.handshake_rejected", status=status, cause=disposition.cause,
                         retry_after_s=disposition.floor_s)

    def connect_failed(self, error: str) -> None:
        self.log.warning("ws.connect_failed", error=error)

    def token_failed(self, status: int | None, error: str, retry_after_s: float) -> None:
        self.log.warning("token.failed", status=status, error=error, retry_after_s=retry_after_s)

    def rate_limited(self, wait_s: float) -> None:
        self.log.debug("ws.rate_limited", wait_s=round(wait_s, 3))

    # -- the breaker and backoff -------------------------------------------------------------------
    def half_open(self) -> None:
        metrics.BREAKER_STATE.labels(self.name).set(1)
        self.log.info("breaker.half_open")

    def first_event(self, breaker_closed: bool) -> None:
        if breaker_closed:
            self.log.info("breaker.closed")
        metrics.BREAKER_STATE.labels(self.name).set(0)

    def reconnect_scheduled(self, disposition: Disposition, plan: Plan) -> None:
        metrics.WS_RECONNECTS.labels(self.name, disposition.cause).inc()
        if plan.opened:
            metrics.BREAKER_STATE.labels(self.name).set(2)
            self.log.error("breaker.opened", attempts=plan.attempts, cause=disposition.cause,
                           cooldown_s=plan.delay_s)
        metrics.BACKOFF_DELAY.labels(self.name).observe(plan.delay_s)
        metrics.BACKOFF_CURRENT.labels(self.name).set(plan.delay_s)
        self.log.info("ws.reconnect_scheduled", cause=disposition.cause,
                      delay_s=round(plan.delay_s, 3), attempts=plan.attempts,
                      floor_s=disposition.floor_s)

    def backoff_over(self) -> None:
        metrics.BACKOFF_CURRENT.labels(self.name).set(0)

    # -- the stream ---------------------------------------------------------------------------
    def gap(self, gap: Gap, retention_s: float) -> None:
        """A resume point older than retention loses events: reported, never hidden."""
        metrics.GAPS.labels(self.name).inc()
        self.log.error("stream.gap", rule=gap.rule, resume=gap.resume,
                       age_s=None if gap.age_s is None else round(gap.age_s, 3),
                       retention_s=retention_s,
                       anchor=None if gap.anchor is None else rfc3339(gap.anchor),
                       first=None if gap.first is None else rfc3339(gap.first))

    def failed(self, cause: str, error: str) -> None:
        metrics.STREAM_FAILED.labels(self.name).set(1)
        self.log.error("stream.failed", cause=cause, error=error)
