"""Genesys Cloud REST calls of one stream, over what its OAuth client shares with other streams.

genesys-cloud contract §2-§3. Streams with the same ``(login host, client_id)`` share one token
manager (client credentials, opaque token: expiry = receipt + ``expires_in``, no refresh token),
one Retry-After clock (``HoldOff``), one channel budget and one lock (``GcClient``). Every call:

* waits out the client's Retry-After clock: a 429 received at t means **no** REST request of that
  OAuth client before t + Retry-After, any stream, any call; then the same call again. The clock
  counts from the answer's *receipt*, never earlier than the server meant. Calls of one client go
  one at a time (the lock), so that no request already on its way can reach the server after a
  429 another request got;
* 401: one new token and one retry, then the stream fails; 5xx or no answer: backoff (jitter,
  salt), the same call; every other answer goes back to the caller (``classify_answer``);
* inside a declared maintenance window (``[[maintenance]]``, docs/operations.md) a 5xx, no
  answer or a token 5xx waits one jittered probe per ``probe_interval_s`` instead of the
  backoff (never before a ``Retry-After``), logged ``maintenance.waiting`` with the ``call``;
  while any call waits so, ``waiting_out`` is above 0 and the stream may report ``maintenance``.

Token failures: ``invalid_client`` fails the stream with one clear line; a token 429 holds the
client's clock; 5xx backs off. Tokens and the secret never reach logs or errors (``http.call``
drops the query from error text and never prints headers).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ccstream.config import ConnectorSettings, GenesysCloudStream
from ccstream.errors import CcstreamError
from ccstream.logs import BoundLogger
from ccstream.timefmt import rfc3339
from connectors.policy.backoff import Backoff
from connectors.policy.gc_channel import Answer as Outcome
from connectors.policy.gc_channel import classify_answer
from connectors.policy.gc_topics import ChannelBudget
from connectors.policy.holdoff import HoldOff
from connectors.policy.maintenance import Calendar, Open, probe_delay
from connectors.sources.base import SourceDeps, TokenSource
from connectors.sources.http import Answer, call
from connectors.sources.proxy import PROXY_REFUSED, proxy_rules
from connectors.sources.stopping import Stopping
from connectors.tokens import TokenError, TokenManager

CHANNELS = "/api/v2/notifications/channels"
QUEUES = "/api/v2/routing/queues"
USERS = "/api/v2/users"
PAGE_SIZE = 100
DEFAULT_HOLD_S = 1.0    # a 429 without a readable Retry-After still holds the client this long


class GcFatalError(CcstreamError):
    """A non-retriable answer: the stream fails with this one line (never a token or secret)."""

    retriable = False


class StoppedError(Exception):
    """``stop()`` came while a call or a wait was under way."""


class GcClient:
    """What the streams of one OAuth client share in a process (contract §1)."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens
        self.hold = HoldOff()
        self.lock = asyncio.Lock()
        self.budget = ChannelBudget()


def tls_context(stream: GenesysCloudStream, log: BoundLogger) -> ssl.SSLContext:
    """Certificates are verified by default; switching it off is explicit and logged loudly."""
    context = ssl.create_default_context(cafile=stream.ca_file)
    if stream.insecure_skip_verify:
        log.warning("tls.verification_disabled", reason="insecure_skip_verify = true")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def shared_client(stream: GenesysCloudStream, settings: ConnectorSettings, deps: SourceDeps,
                  context: ssl.SSLContext, log: BoundLogger) -> GcClient:
    """The ``GcClient`` of this stream's ``(login host, client_id)``, made once per process."""
    login = stream.login()
    host = urlsplit(login).netloc

    def make() -> GcClient:
        assert deps.http is not None
        return GcClient(TokenManager(
            login + "/oauth/token", stream.client_id, stream.secret(),
            buffer_s=settings.token_safety_buffer_s, http=deps.http, clock=deps.wall, log=log,
            ssl=context if login.startswith("https") else None,
            proxy=proxy_rules(deps).route(login, stream.proxy)))

    return deps.shared.get(("genesys-cloud", host, stream.client_id), make)


class GcRest:
    def __init__(self, stream: GenesysCloudStream, settings: ConnectorSettings,
                 deps: SourceDeps, *, client: GcClient, stopping: Stopping, log: BoundLogger,
                 context: ssl.SSLContext, calendar: Calendar | None = None,
                 on_wait: Callable[[], None] = lambda: None) -> None:
        assert deps.http is not None, "the Genesys Cloud source needs an HTTP session"
        self.stream = stream
        self.client = client
        self.http: aiohttp.ClientSession = deps.http
        self.clock: Callable[[], float] = deps.clock
        self.stopping = stopping
        self.log = log
        self.api = stream.api_url.rstrip("/")
        self.timeout_s = settings.open_timeout_s
        self._ssl: ssl.SSLContext | bool = context if self.api.startswith("https") else True
        self._proxy = proxy_rules(deps).route(self.api, stream.proxy)
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_max_s, settings.jitter,
                               deps.rand, settings.deployment_offset_s)
        self.calendar = calendar or Calendar(())
        self.wall: Callable[[], float] = deps.wall
        self.rand: Callable[[], float] = deps.rand
        self.waiting_out = 0            # calls waiting out a maintenance window now
        self._on_wait = on_wait         # told when ``waiting_out`` moves

    async def request(self, method: str, path: str, *, body: Any = None,
                      params: dict[str, str] | None = None) -> Answer:
        """One REST call, retried as §3 says; the answer for the caller to read (200, 404,
        400, 403, ...). ``GcFatalError``: the stream fails; ``StoppedError``: stopped."""
        retried_auth, attempt = False, 0
        while True:
            answer, token = await self._send(method, path, body, params)
            outcome = classify_answer(answer.status)
            if outcome is Outcome.HOLD:
                # §3: no request of this OAuth client before receipt + Retry-After, any stream
                hold_s = answer.retry_after_s or DEFAULT_HOLD_S
                self.client.hold.hold(self.clock(), hold_s)
                self._retrying(method, path, answer, hold_s)
                continue
            if outcome is Outcome.AUTH:
                self.client.tokens.invalidate(token)
                if retried_auth:
                    raise GcFatalError(self.line(method, path, answer, "twice, with a new token"))
                retried_auth = True
                continue
            if outcome is Outcome.RETRY:  # a 503's Retry-After is a floor of this call's wait
                window = self.calendar.open_at(self.wall())
                if window is not None:
                    delay = max(probe_delay(window, self.wall(), self.rand),
                                answer.retry_after_s)
                    self._retrying(method, path, answer, delay)
                    await self._wait_out(window, delay, f"{method} {path}",
                                         "no_answer" if answer.status is None else
                                         f"status_{answer.status}")
                    continue
                delay = self.backoff.delay(attempt, answer.retry_after_s)
                attempt += 1
                self._retrying(method, path, answer, delay)
                await self._sleep(delay)
                continue
            return answer

    async def list_ids(self, path: str) -> list[str]:
        """Every entity id of a paged listing (§3: pages 1 ... ``pageCount`` of 100)."""
        ids: list[str] = []
        page, count = 1, 1
        while page <= count:
            answer = await self.request("GET", path, params={
                "pageSize": str(PAGE_SIZE), "pageNumber": str(page)})
            doc = answer.body
            if not answer.ok or not isinstance(doc, dict):
                raise GcFatalError(self.line("GET", path, answer))
            entities = doc.get("entities")
            entities = entities if isinstance(entities, list) else []
            ids += [e["id"] for e in entities
                    if isinstance(e, dict) and isinstance(e.get("id"), str)]
            pages = doc.get("pageCount")
            count = pages if isinstance(pages, int) else page + (len(entities) >= PAGE_SIZE)
            page += 1
        return ids

    # -- one attempt ---------------------------------------------------------------------------
    async def _send(self, method: str, path: str, body: Any,
                    params: dict[str, str] | None) -> tuple[Answer, str]:
        async with self._turn():
            token = await self._token()  # after the client's clock: a wait never ages the token
            answer = await self.stopping.race(call(
                self.http, method, self.api + path, timeout_s=self.timeout_s,
                headers={"Authorization": f"Bearer {token}"}, json=body, params=params,
                ssl=self._ssl, proxy=self._proxy))
            if answer is None:
                raise StoppedError
            return answer, token

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One call of this OAuth client at a time (see the module docstring)."""
        if await self.stopping.race(self.client.lock.acquire()) is None:
            raise StoppedError
        try:
            yield
        finally:
            self.client.lock.release()

    async def _held(self) -> None:
        while (wait := self.client.hold.wait(self.clock())) > 0:
            await self._sleep(wait)

    async def _token(self) -> str:
        attempt = 0
        while True:
            await self._held()
            try:
                token = await self.stopping.race(self.client.tokens.get())
            except TokenError as err:
                if not err.retriable:
                    fix = ("check the proxy's user and password (proxy or HTTPS_PROXY)"
                           if err.error == PROXY_REFUSED
                           else "check client_id and the client secret")
                    raise GcFatalError(
                        f"stream {self.stream.name}: the token request was refused "
                        f"({err.status or 'no answer'} {err.error}): {fix}") from None
                self.log.warning("token.failed", status=err.status, error=err.error,
                                 retry_after_s=err.retry_after_s)
                window = self.calendar.open_at(self.wall())
                if err.status == 429:  # §2: nothing before Retry-After (token requests too)
                    self.client.hold.hold(self.clock(), err.retry_after_s or DEFAULT_HOLD_S)
                elif window is not None:
                    await self._wait_out(window, probe_delay(window, self.wall(), self.rand),
                                         "token", err.error)
                else:
                    await self._sleep(self.backoff.delay(attempt))
                    attempt += 1
                continue
            if token is None:
                raise StoppedError
            return token

    async def _sleep(self, seconds: float) -> None:
        if not await self.stopping.sleep(seconds):
            raise StoppedError

    async def _wait_out(self, window: Open, delay: float, what: str, dropped: str) -> None:
        """A failed call inside a declared window: one probe ``delay`` later, no backoff."""
        self.log.info("maintenance.waiting", call=what, until=rfc3339(window.end),
                      probe_in_s=round(delay, 3), dropped=dropped)
        self.waiting_out += 1
        self._on_wait()
        try:
            await self._sleep(delay)
        finally:
            self.waiting_out -= 1
            self._on_wait()

    # -- reports ---------------------------------------------------------------------------------
    def _retrying(self, method: str, path: str, answer: Answer, delay_s: float) -> None:
        self.log.warning("rest.retrying", method=method, path=path, status=answer.status,
                         error=answer.error or None, delay_s=round(delay_s, 3))

    def line(self, method: str, path: str, answer: Answer, extra: str = "") -> str:
        """The one line of a failed call: stream, call, status, the server's message."""
        doc = answer.body if isinstance(answer.body, dict) else {}
        message = str(doc.get("message") or doc.get("code") or answer.error or "")[:300]
        said = f"{answer.status}" + (f" {extra}" if extra else "")
        return f"stream {self.stream.name}: {method} {path} answered {said}: {message}".rstrip(": ")
