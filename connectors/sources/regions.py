"""A guide-flavour stream's endpoints (regions): tokens, proxies, failover and the primary's probe.

The WebSocket source asks this object which endpoint the next attempt uses (URL, token source,
proxy route) and tells it how attempts went; the decisions are ``policy.failover``'s, this module
carries them out and reports them (``failover.switched``, ``failover.probe``, the gauge
``ccstream_stream_endpoint{stream,endpoint}``). One endpoint (``url`` + ``token_url``) is the
one-region case: no switch, no probe.

Each endpoint has its own token manager (its ``token_url``; shared per credential across the
process, ``Shared``) and its own proxy route (``sources.proxy``). The resume point is the
stream's, not the endpoint's: the next attempt on any endpoint carries it (what a region makes
of another region's resume point is the platform's own rule, docs/operations.md).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from ccstream import metrics
from ccstream.config import ConnectorSettings, Endpoint, StreamConfig
from ccstream.logs import BoundLogger, get_logger
from connectors.kafka.delivery import safe_error
from connectors.platforms import PlatformAdapter
from connectors.policy.close_codes import classify_handshake
from connectors.policy.failover import Failover, FailoverState, Switch
from connectors.sources.base import SourceDeps, TokenSource
from connectors.sources.proxy import Route, proxy_rules
from connectors.sources.wire import probe_handshake, tls_context
from connectors.tokens import TokenError, TokenManager


def endpoint_label(url: str) -> str:
    """An endpoint as a metric label and in logs: scheme, host and path, never the query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def guide_tokens(stream: StreamConfig, endpoint: Endpoint, settings: ConnectorSettings,
                 deps: SourceDeps, route: Route | None) -> TokenSource:
    """The token manager of one credential (token URL + client id), shared by every stream of
    that credential in the process (one refresh in flight for all of them)."""
    assert endpoint.token_url is not None
    token_url = endpoint.token_url

    def make() -> TokenManager:
        log = get_logger("ccstream.connector", stream=stream.name, platform=stream.platform)
        assert deps.http is not None
        return TokenManager(
            token_url, stream.client_id, stream.secret(),
            buffer_s=settings.token_safety_buffer_s, http=deps.http, clock=deps.wall,
            ssl=tls_context(stream, log) if token_url.startswith("https") else None,
            proxy=route)

    proxied = route.bare if route is not None else ""
    return deps.shared.get(("guide-token", token_url, stream.client_id, proxied), make)


class Regions:
    """The endpoints of one stream and the failover decisions over them."""

    def __init__(self, stream: StreamConfig, settings: ConnectorSettings, deps: SourceDeps,
                 log: BoundLogger, tokens: TokenSource | None = None) -> None:
        self.stream = stream
        self.settings = settings
        self.deps = deps
        self.log = log
        self.endpoints = stream.endpoint_list()
        rules = proxy_rules(deps)
        self.routes = [rules.route(e.url, stream.proxy) for e in self.endpoints]
        self.token_sources = [
            tokens if tokens is not None else guide_tokens(
                stream, e, settings, deps, rules.route(e.token_url or "", stream.proxy))
            for e in self.endpoints]
        self.labels = [endpoint_label(e.url) for e in self.endpoints]
        self.policy = Failover(len(self.endpoints), settings.failover_after_attempts,
                               settings.failback_probe_interval_s, deps.rand)
        # per endpoint: no attempt nor probe before the last Retry-After it gave has elapsed
        self.not_before = [0.0] * len(self.endpoints)
        for route in {r for r in self.routes if r is not None}:
            log.info("proxy.configured", proxy=route.shown, origin=route.origin)
        self._gauge()

    # -- the endpoint of the next attempt ------------------------------------------------------
    @property
    def current(self) -> int:
        return self.policy.current

    @property
    def url(self) -> str:
        return self.endpoints[self.current].url

    @property
    def tokens(self) -> TokenSource:
        return self.token_sources[self.current]

    @property
    def route(self) -> Route | None:
        return self.routes[self.current]

    @property
    def label(self) -> str:
        return self.labels[self.current]

    # -- what the session reports ----------------------------------------------------------------
    def failed(self, breaker_opened: bool, floor_s: float = 0.0) -> None:
        """An attempt or a connection ended badly (outside any maintenance window); ``floor_s``
        is the endpoint's Retry-After, which a later probe of it honours too."""
        if floor_s > 0:
            self.not_before[self.current] = self.deps.clock() + floor_s
        self._report(self.policy.failed(breaker_opened))

    def streaming(self) -> bool:
        """The first event of a connection arrived; True when the primary is to be probed."""
        self.policy.streaming(self.deps.clock())
        return self.policy.state is FailoverState.SECONDARY

    # -- probing the primary from a secondary ----------------------------------------------------
    async def probe_loop(self, adapter: PlatformAdapter, context: ssl.SSLContext | None,
                         fail_back: Callable[[], None]) -> None:
        """While the connection on a secondary lasts (the caller cancels this task when it
        ends): probe the primary when due; when it answers, ``fail_back()`` closes the socket."""
        clock, policy = self.deps.clock, self.policy
        try:
            while policy.state is FailoverState.SECONDARY and policy.probe_at is not None:
                await asyncio.sleep(max(policy.probe_at - clock(), self.not_before[0] - clock(),
                                        0.0))
                if not policy.probe_due(clock()) or clock() < self.not_before[0]:
                    continue
                policy.probe_started()
                wait = self.deps.limiter.reserve(clock())  # a probe is an attempt: the cap holds
                if wait > 0:
                    await asyncio.sleep(wait)
                ok = await self._probe(adapter, context)
                if self._report(policy.probe_answered(ok, clock())):
                    fail_back()
                    return
        finally:
            if policy.state is FailoverState.PROBING:  # cancelled mid-probe: the answer is void
                policy.probe_answered(False, clock())

    async def _probe(self, adapter: PlatformAdapter, context: ssl.SSLContext | None) -> bool:
        primary, s = self.endpoints[0], self.settings
        error: str | None = None
        tokens = self.token_sources[0]
        try:
            token = await tokens.get()
            try:
                await probe_handshake(
                    adapter.url(primary.url, token, None, self.stream.types),
                    max_frame_bytes=s.max_frame_bytes, open_timeout_s=s.open_timeout_s,
                    close_timeout_s=s.close_timeout_s, context=context, proxy=self.routes[0])
            except InvalidStatus as err:
                status = err.response.status_code
                if status == 401:
                    tokens.invalidate(token)
                floor = classify_handshake(status, dict(err.response.headers.raw_items())).floor_s
                if floor > 0:  # the next probe honours the primary's Retry-After too
                    self.not_before[0] = self.deps.clock() + floor
                raise
        except (TokenError, OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            error = safe_error(err)
        self.log.info("failover.probe", endpoint=self.labels[0], ok=error is None, error=error)
        return error is None

    # -- reports -------------------------------------------------------------------------------
    def _report(self, switch: Switch | None) -> bool:
        if switch is None:
            return False
        self.log.warning("failover.switched", source=self.labels[switch.source],
                         target=self.labels[switch.target], reason=switch.reason)
        self._gauge()
        return True

    def _gauge(self) -> None:
        for i, label in enumerate(self.labels):
            metrics.STREAM_ENDPOINT.labels(self.stream.name, label).set(
                1 if i == self.current else 0)
