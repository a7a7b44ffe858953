"""A CXone stream's log lines and metrics, said once (docs/cxone.md §7).

Every line and series carries ``stream``. Logs: ``discovery.done`` ``{api_endpoint, area}``,
``discovery.changed``, ``poll.failed`` ``{endpoint, status}``, ``poll.truncated``,
``poll.no_poll_time``, ``stream.gap`` ``{from, to, seconds, reason, endpoint}``,
``backfill.started``, ``backfill.done`` ``{from, to, records, pages, seconds}``,
``maintenance.waiting`` ``{endpoint, until, probe_in_s, dropped}``; plus the shared
``breaker.*``, ``stream.failed``, ``kafka.waiting``/``kafka.recovered``. Metrics:
``ccstream_polls_total{endpoint, outcome}``, ``ccstream_poll_rows_total{endpoint}``,
``ccstream_gaps_total``, ``ccstream_gap_seconds_total``, ``ccstream_backfill_records_total{kind}``,
``ccstream_backfill_seconds``, and the breaker/backoff gauges every source has.
"""

from __future__ import annotations

from collections.abc import Iterable

from ccstream import metrics
from ccstream.logs import BoundLogger, get_logger
from ccstream.timefmt import rfc3339
from connectors.policy.cxone_ledger import BackfillRun
from connectors.policy.cxone_polling import Decision, GapReport
from connectors.policy.retry import Plan

BACKFILL_KIND = "completed_contact"


class CxoneReport:
    def __init__(self, name: str, endpoints: Iterable[str]) -> None:
        self.name = name
        self.log: BoundLogger = get_logger("ccstream.connector", stream=name, platform="cxone")
        # every series exists from the start (a scrape shows 0, not nothing)
        for endpoint in endpoints:
            metrics.POLL_ROWS.labels(name, endpoint)
            for outcome in ("ok", "not_modified", "error"):
                metrics.POLLS.labels(name, endpoint, outcome)
        for counter in (metrics.GAPS, metrics.GAP_SECONDS, metrics.EVENTS_IN,
                        metrics.EVENTS_PRODUCED):
            counter.labels(name)
        metrics.BACKFILL_RECORDS.labels(name, BACKFILL_KIND)
        for gauge in (metrics.BREAKER_STATE, metrics.BACKOFF_CURRENT, metrics.STREAM_FAILED):
            gauge.labels(name).set(0)

    # -- discovery -------------------------------------------------------------------------
    def discovered(self, api_endpoint: str, area: str, previous: str | None) -> None:
        self.log.info("discovery.done", api_endpoint=api_endpoint, area=area)
        if previous is not None and previous != api_endpoint:
            self.log.warning("discovery.changed", previous=previous, api_endpoint=api_endpoint,
                             area=area)

    # -- polls -----------------------------------------------------------------------------
    def polled(self, endpoint: str, outcome: str, rows: int = 0) -> None:
        metrics.POLLS.labels(self.name, endpoint, outcome).inc()
        if rows:
            metrics.POLL_ROWS.labels(self.name, endpoint).inc(rows)

    def failed_request(self, what: str, endpoint: str | None, *, status: int | None,
                       decision: Decision, error: str, delay_s: float | None) -> None:
        """A poll (``endpoint``) or a backfill page that did not go through."""
        if endpoint is not None:
            metrics.POLLS.labels(self.name, endpoint, "error").inc()
        event = "poll.failed" if endpoint is not None else "backfill.page_failed"
        self.log.warning(event, endpoint=endpoint or what, status=status, cause=decision.cause,
                         action=decision.action.value, error=error or None,
                         retry_after_s=decision.retry_after_s or None,
                         delay_s=None if delay_s is None else round(delay_s, 3))

    def truncated(self, endpoint: str, u: str, poll_time: str | None) -> None:
        self.log.warning("poll.truncated", endpoint=endpoint, updated_since=u,
                         last_poll_time=poll_time)

    def no_poll_time(self, endpoint: str, rows: int) -> None:
        self.log.warning("poll.no_poll_time", endpoint=endpoint, rows=rows)

    def gap(self, gap: GapReport) -> None:
        """§5: logged and counted, never hidden."""
        metrics.GAPS.labels(self.name).inc()
        metrics.GAP_SECONDS.labels(self.name).inc(gap.seconds)
        self.log.error("stream.gap", **{"from": rfc3339(gap.start), "to": rfc3339(gap.end)},
                       seconds=round(gap.seconds, 3), reason=gap.reason, endpoint=gap.endpoint)

    # -- backfill ----------------------------------------------------------------------------
    def backfill_started(self, run: BackfillRun) -> None:
        self.log.info("backfill.started", **{"from": rfc3339(run.gap[0]),
                                              "to": rfc3339(run.gap[1])}, run=run.number)

    def backfill_records(self, count: int) -> None:
        if count:
            metrics.BACKFILL_RECORDS.labels(self.name, BACKFILL_KIND).inc(count)

    def backfill_done(self, run: BackfillRun, seconds: float) -> None:
        metrics.BACKFILL_SECONDS.labels(self.name).observe(seconds)
        self.log.info("backfill.done", **{"from": rfc3339(run.gap[0]),
                                           "to": rfc3339(run.gap[1])},
                      records=run.records, pages=run.pages, seconds=round(seconds, 3))

    def backfill_abandoned(self, run: BackfillRun, why: str) -> None:
        self.log.warning("backfill.abandoned", **{"from": rfc3339(run.gap[0]),
                                                   "to": rfc3339(run.gap[1])},
                         pages=run.pages, why=why)

    def maintenance(self, what: str, until: float, delay_s: float, dropped: str) -> None:
        """A loop waits out a declared maintenance window (docs/operations.md)."""
        metrics.BACKOFF_CURRENT.labels(self.name).set(delay_s)
        self.log.info("maintenance.waiting", endpoint=what, until=rfc3339(until),
                      probe_in_s=round(delay_s, 3), dropped=dropped)

    # -- breaker, backoff, failure ---------------------------------------------------------------
    def backoff(self, what: str, plan: Plan) -> None:
        metrics.BACKOFF_DELAY.labels(self.name).observe(plan.delay_s)
        metrics.BACKOFF_CURRENT.labels(self.name).set(plan.delay_s)
        if plan.opened:
            metrics.BREAKER_STATE.labels(self.name).set(2)
            self.log.error("breaker.opened", endpoint=what, attempts=plan.attempts,
                           cooldown_s=plan.delay_s)

    def backoff_over(self) -> None:
        metrics.BACKOFF_CURRENT.labels(self.name).set(0)

    def half_open(self, what: str) -> None:
        metrics.BREAKER_STATE.labels(self.name).set(1)
        self.log.info("breaker.half_open", endpoint=what)

    def recovered(self, what: str, breaker_closed: bool) -> None:
        if breaker_closed:
            self.log.info("breaker.closed", endpoint=what)
            metrics.BREAKER_STATE.labels(self.name).set(0)

    def failed(self, line: str) -> None:
        metrics.STREAM_FAILED.labels(self.name).set(1)
        self.log.error("stream.failed", error=line)
