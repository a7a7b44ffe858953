"""One CXone loop's requests to the API base, until one goes through (docs/cxone.md §3, §6).

A poll loop (one per endpoint) and the backfill loop each own a ``Caller``: its own backoff,
sliding retry window and breaker (``ReconnectPolicy``; the attempt counter resets only when an
answer goes through, ``ccaas-wire.md`` §3) and its own ``AuthLadder``. ``fetch`` carries out the
pure decisions (``cxone_polling.classify``) until an answer is usable:

* before an attempt: the breaker (open: wait for the half-open probe), the per-host cap
  (``deps.limiter``) on every retry, a token that is not due and the API base (``CxoneAuth``,
  single-flight per access key), then the key's ``Retry-After`` clock, with nothing awaited
  between that check and the request (§9: no request before a 429's ``Retry-After``);
* one request, bounded by ``open_timeout_s`` in all; on timeout or stop the request is
  cancelled, which closes its connection (§3: "abandoned and its connection closed"), and the
  loop being sequential, never two polls of one endpoint are in flight;
* after it: 429/5xx ``Retry-After`` holds every request of the key; 401 → new token, then
  rediscovery, then the stream fails; 403 fails; 404 rediscovers once, then fails; 429, 5xx,
  timeouts and connection errors back off (a refused connection also rediscovers, §2); a 200
  that is not JSON, or not the expected shape, goes to the DLQ with its reason and is retried;
* inside a declared maintenance window (``[[maintenance]]``, docs/operations.md) a retriable
  failure counts towards neither the backoff nor the breaker: the loop reports ``maintenance``
  and makes its next request after ``policy.maintenance.probe_delay`` (one probe per
  ``probe_interval_s``, jittered; never before the key's ``Retry-After``), as the guide's
  flavours do. Failures that fail the stream (401 after the ladder, 403, 404) still do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from ccstream.config import ConnectorSettings, CxoneStream
from connectors.policy.backoff import Backoff
from connectors.policy.breaker import Breaker, BreakerState
from connectors.policy.cxone_polling import (
    Action,
    AuthLadder,
    Decision,
    PollState,
    classify,
    poll_transition,
)
from connectors.policy.maintenance import Calendar, Open, probe_delay
from connectors.policy.retry import ReconnectPolicy, RetryWindow
from connectors.sources.base import SourceDeps
from connectors.sources.cxone_auth import CxoneAuth, CxoneAuthError
from connectors.sources.cxone_report import CxoneReport
from connectors.sources.http import Answer, call
from connectors.sources.stopping import Stopping


class CallHost(Protocol):
    """What a caller needs of its source."""

    stream: CxoneStream
    settings: ConnectorSettings
    deps: SourceDeps
    auth: CxoneAuth
    report: CxoneReport
    stopping: Stopping
    calendar: Calendar     # the stream's declared maintenance windows
    generation: int        # moves when Kafka lost records: answers asked for before are stale

    @property
    def http(self) -> aiohttp.ClientSession: ...

    def fail(self, line: str) -> None: ...

    def seen_discovery(self) -> None: ...

    def loop_changed(self) -> None: ...

    async def dead_letter(self, raw: bytes, reason: str) -> None: ...


@dataclass(frozen=True)
class Got:
    """An answer that went through (200, 204 or 304)."""

    answer: Answer
    sent: float            # monotonic
    received: float
    query: dict[str, str]
    generation: int


@dataclass(frozen=True)
class _Refused:
    decision: Decision
    status: int | None
    error: str
    token: str | None = None
    base: str | None = None


class Caller:
    def __init__(self, host: CallHost, what: str, endpoint: str | None) -> None:
        self.host = host
        self.what = what               # the endpoint, or contacts/completed
        self.endpoint = endpoint       # None: not a poll (no ccstream_polls_total)
        s = host.settings
        self.policy = ReconnectPolicy(
            Backoff(s.backoff_base_s, s.backoff_max_s, s.jitter, host.deps.rand,
                    s.deployment_offset_s),
            RetryWindow(s.retry_window_s), Breaker(s.breaker_cooldown_s), s.max_attempts,
            s.max_auth_failures)
        self.ladder = AuthLadder()
        self.state = PollState.IDLE
        self.healthy: bool | None = None

    def go(self, state: PollState) -> None:
        if state is not self.state:
            self.state = poll_transition(self.state, state)
            self.host.loop_changed()

    async def fetch(self, path: str, query: Callable[[], dict[str, str]],
                    check: Callable[[Answer], str]) -> Got | None:
        """``GET {api}{path}?{query()}`` until it goes through; None once stopped or failed.
        ``check`` says why a 200's body is unusable ("" when it is fine)."""
        retry = False
        while not self.host.stopping.is_set():
            if not await self._allowed(retry):
                return None
            retry = True
            self.go(PollState.POLLING)
            outcome = await self._attempt(path, query, check)
            if outcome is None:
                return None
            if isinstance(outcome, Got):
                self.healthy = True
                self.go(PollState.IDLE)
                self.host.report.recovered(self.what, self.policy.event())
                return outcome
            if not await self._refused(outcome):
                return None
        return None

    async def _allowed(self, retry: bool) -> bool:
        clock, stopping = self.host.deps.clock, self.host.stopping
        while (wait := self.policy.ready(clock())) > 0:
            if not await stopping.sleep(wait):
                return False
        if self.policy.breaker.state is BreakerState.HALF_OPEN:
            self.host.report.half_open(self.what)
        if retry:  # ccaas-wire.md §3: the per-host cap on reconnects holds for retried polls
            wait = self.host.deps.limiter.reserve(clock())
            if wait > 0 and not await stopping.sleep(wait):
                return False
        return not stopping.is_set()

    async def _credentials(self) -> tuple[str, str] | _Refused | None:
        host, stopping = self.host, self.host.stopping
        try:
            token = await stopping.race(host.auth.token())
            if token is None or not self._tenant_ok():
                return None
            base = await stopping.race(host.auth.base())
        except CxoneAuthError as err:
            if not err.retriable:
                host.fail(f"stream {host.stream.name}: {err}")
                return None
            return _Refused(Decision(Action.RETRY, f"{err.step}_failed", err.retry_after_s),
                            err.status, err.error)
        if base is None:
            return None
        host.seen_discovery()
        return token, base

    def _tenant_ok(self) -> bool:
        """§2: a configured tenant_id that differs from the token's claim fails the stream."""
        configured, claimed = self.host.stream.tenant_id, self.host.auth.claimed_tenant
        if configured and claimed and configured != claimed:
            self.host.fail(f"stream {self.host.stream.name}: tenant_id {configured!r} differs "
                           f"from the token's tenantId {claimed!r}")
            return False
        return True

    async def _held(self) -> bool:
        """Wait out the key's Retry-After (every stream and loop of the key shares it)."""
        clock, holdoff = self.host.deps.clock, self.host.auth.holdoff
        while (wait := holdoff.wait(clock())) > 0:
            if not await self.host.stopping.sleep(wait):
                return False
        return True

    async def _attempt(self, path: str, query: Callable[[], dict[str, str]],
                       check: Callable[[Answer], str]) -> Got | _Refused | None:
        host = self.host
        credentials = await self._credentials()
        if credentials is None or isinstance(credentials, _Refused):
            return credentials
        token, base = credentials
        if not await self._held():
            return None
        clock, generation, params = host.deps.clock, host.generation, query()
        sent = clock()
        answer = await host.stopping.race(call(
            host.http, "GET", base + path, params=params, timeout_s=host.settings.open_timeout_s,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            ssl=host.auth.ssl, proxy=host.auth.route(base + path)))
        if answer is None:
            return None  # stopped: the request was cancelled and its connection closed
        received = clock()
        if answer.status is not None and (answer.status == 429 or answer.status >= 500):
            host.auth.holdoff.hold(received, answer.retry_after_s)
        decision = classify(answer.status, ladder=self.ladder, retry_after_s=answer.retry_after_s,
                            timed_out=answer.timed_out, error=answer.error,
                            what=f"stream {host.stream.name}: {self.what}")
        if decision.action is Action.OK:
            problem = "" if answer.status != 200 else answer.error or check(answer)
            if not problem:
                return Got(answer, sent, received, params, generation)
            await host.dead_letter(answer.raw, problem)
            decision = Decision(Action.RETRY, "bad_answer")
        return _Refused(decision, answer.status, answer.error, token, base)

    async def _refused(self, refused: _Refused) -> bool:
        """Carry out a refusal; False when the loop must end (failed or stopped)."""
        host, decision = self.host, refused.decision
        report = host.report
        if decision.action is Action.FAIL:
            report.failed_request(self.what, self.endpoint, status=refused.status,
                                  decision=decision, error=refused.error, delay_s=None)
            host.fail(decision.detail)
            return False
        if decision.action is not Action.RETRY:
            # 401: a new token; 401 again or 404: discover again; retried at once (the ladder
            # bounds it), still under the per-host cap and the key's Retry-After
            if decision.action is Action.REFRESH and refused.token is not None:
                host.auth.invalidate(refused.token)
            elif refused.base is not None:
                host.auth.stale(refused.base)
            report.failed_request(self.what, self.endpoint, status=refused.status,
                                  decision=decision, error=refused.error, delay_s=None)
            return True
        if decision.rediscover and refused.base is not None:
            host.auth.stale(refused.base)  # §2: a refused connection or DNS failure
        clock = host.deps.clock
        floor = max(decision.retry_after_s, host.auth.holdoff.wait(clock()))
        window = host.calendar.open_at(host.deps.wall())
        if window is not None:
            return await self._maintenance(refused, window, floor)
        plan = self.policy.failure(clock(), floor)
        self.healthy = False
        self.go(PollState.OPEN if self.policy.breaker.state is BreakerState.OPEN
                else PollState.BACKOFF)
        report.failed_request(self.what, self.endpoint, status=refused.status,
                              decision=decision, error=refused.error, delay_s=plan.delay_s)
        report.backoff(self.what, plan)
        slept = await host.stopping.sleep(plan.delay_s)
        report.backoff_over()
        return slept

    async def _maintenance(self, refused: _Refused, window: Open, floor: float) -> bool:
        """A retriable failure inside a declared window: no backoff, no breaker; the next
        request is one probe about ``probe_interval_s`` later (never before ``floor``)."""
        host = self.host
        delay = max(probe_delay(window, host.deps.wall(), host.deps.rand), floor)
        self.healthy = False
        self.go(PollState.MAINTENANCE)
        host.report.failed_request(self.what, self.endpoint, status=refused.status,
                                   decision=refused.decision, error=refused.error,
                                   delay_s=delay)
        host.report.maintenance(self.what, window.end, delay, refused.decision.cause)
        slept = await host.stopping.sleep(delay)
        host.report.backoff_over()
        return slept
