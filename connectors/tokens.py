"""OAuth2 tokens per credential: a single-flight manager (aiohttp) over the pure expiry math of
``connectors.policy.token_expiry``.

The integration guide's token endpoint (docs/protocols.md, "Tokens") and Genesys Cloud's client
credentials grant (opaque tokens, no refresh token) both fit it. When a token expires and when it
is replaced is ``token_expiry``'s (a too-short lifetime is logged as ``token.short_lived``).

The manager never hands out a token it knows is due or was rejected: ``get()`` is called before
every connection attempt, and ``invalidate(token)`` after every auth close or 401, so that no
handshake ever carries a known-expired token (the infinite-401 loop of the integration guide).
Refreshes are single-flight: one request in flight per credential however many streams wait,
and an auth close seen by N streams of one credential costs one refresh. Tokens, refresh tokens
and the client secret never reach logs, errors or metrics (``Token.__repr__`` hides them).
"""

from __future__ import annotations

import asyncio
import base64
import math
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from ccstream import metrics
from ccstream.errors import CcstreamError
from ccstream.logs import BoundLogger, get_logger
from connectors.policy.close_codes import retry_after_seconds
from connectors.policy.session import CERT_ERROR
from connectors.policy.token_expiry import Token, expires_at, jwt_exp, refresh_at
from connectors.sources.proxy import (
    PROXY_REFUSED,
    SOCKS_ERRORS,
    Route,
    aiohttp_kwargs,
    routed,
    socks_refusal,
)

Clock = Callable[[], float]


class TokenError(CcstreamError):
    """The token endpoint refused or failed; never carries a token or secret."""

    def __init__(self, credential: str, status: int | None, error: str, *,
                 retriable: bool, retry_after_s: float = 0.0) -> None:
        super().__init__(f"token request for {credential} failed: {status or 'no answer'} {error}")
        self.credential = credential
        self.status = status
        self.error = error
        self.retriable = retriable
        self.retry_after_s = retry_after_s


class TokenManager:
    """Tokens of one credential (token URL + client id), shared by every stream using it."""

    # ``clock`` must be the wall clock (epoch seconds): the JWT ``exp`` is compared with it
    def __init__(self, token_url: str, client_id: str, secret: str, *, buffer_s: float,
                 http: aiohttp.ClientSession, clock: Clock, log: BoundLogger | None = None,
                 ssl: ssl_module.SSLContext | None = None, proxy: Route | None = None) -> None:
        self.token_url = token_url
        self.client_id = client_id
        # contract §1: client credentials in ``Authorization: Basic base64(id:secret)``
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self._headers = {"Authorization": f"Basic {basic}"}
        self.buffer_s = buffer_s
        self._http = http
        self._clock = clock
        self._ssl: ssl_module.SSLContext | bool = ssl if ssl is not None else True
        self._route = proxy
        self._proxy = aiohttp_kwargs(proxy)  # the stream's proxy decision (sources.proxy)
        self._fatal: TokenError | None = None
        self.log = log or get_logger("ccstream.tokens", credential=client_id)
        self._token: Token | None = None
        self._inflight: asyncio.Task[Token] | None = None
        self.refreshes = 0  # completed token requests (all grants), for tests and the demo

    async def get(self) -> str:
        """A token that is not due; refreshes (single-flight) when needed."""
        if self._fatal is not None:
            raise self._fatal  # wrong credentials do not heal: no more requests for them
        token = self._token
        if token is not None and token.usable(self._clock()):
            return token.access
        return (await self._refresh()).access

    def invalidate(self, access: str) -> None:
        """``access`` was rejected (401, 1008, auth close): never hand it out again."""
        token = self._token
        if token is not None and token.access == access:
            self._token = Token(token.access, token.refresh, token.receipt, token.expires,
                                due=-math.inf)

    async def _refresh(self) -> Token:
        if self._inflight is None:
            task = asyncio.get_running_loop().create_task(self._fetch())
            self._inflight = task
            task.add_done_callback(self._clear_inflight)
        # shield: one waiter being cancelled (its stream stopping) must not cancel the request
        return await asyncio.shield(self._inflight)

    def _clear_inflight(self, task: asyncio.Task[Token]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved: waiters got it; avoids "never retrieved" noise

    async def _fetch(self) -> Token:
        try:
            return await self._fetch_once()
        except TokenError as err:
            if not err.retriable:
                self._fatal = err
                self.log.error("token.rejected", status=err.status, error=err.error)
            raise

    async def _fetch_once(self) -> Token:
        previous = self._token
        if previous is not None and previous.refresh:
            try:
                return await self._grant("refresh_token", {"refresh_token": previous.refresh})
            except TokenError as err:
                if err.error != "invalid_grant":
                    raise
                # the refresh token was used or expired: contract §1 says fall back
                self.log.info("token.refresh_rejected", error=err.error)
        return await self._grant("client_credentials", {})

    async def _grant(self, grant: str, extra: dict[str, str]) -> Token:
        labels = {"credential": self.client_id, "grant": grant}
        try:
            status, body, retry_after = await self._post({"grant_type": grant, **extra})
        except aiohttp.ClientConnectorCertificateError:
            # not retriable: the same certificate fails the same way on every attempt
            metrics.TOKEN_REFRESHES.labels(**labels, outcome=CERT_ERROR).inc()
            raise TokenError(self.client_id, None, CERT_ERROR, retriable=False) from None
        except aiohttp.ClientHttpProxyError as err:
            # the proxy refused the CONNECT (https token URL); 407 = wrong proxy credentials,
            # which do not heal, as a proxied http request's 407 answer below
            metrics.TOKEN_REFRESHES.labels(**labels, outcome="proxy_error").inc()
            raise TokenError(self.client_id, err.status, PROXY_REFUSED
                             if err.status == 407 else "proxy_error",
                             retriable=err.status != 407) from None
        except SOCKS_ERRORS as err:
            # a SOCKS proxy's refusal: wrong credentials do not heal (as a 407), others might
            refusal = socks_refusal(err)
            metrics.TOKEN_REFRESHES.labels(**labels, outcome="proxy_error").inc()
            raise TokenError(self.client_id, None, refusal,
                             retriable=refusal != PROXY_REFUSED) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            metrics.TOKEN_REFRESHES.labels(**labels, outcome="error").inc()
            raise TokenError(self.client_id, None, type(err).__name__, retriable=True) from None
        if status != 200 or not isinstance(body.get("access_token"), str):
            error = str(body.get("error", PROXY_REFUSED if status == 407
                                 else "bad_response"))
            metrics.TOKEN_REFRESHES.labels(**labels, outcome=error).inc()
            retriable = status == 429 or status >= 500 or status == 200
            raise TokenError(self.client_id, status, error, retriable=retriable,
                             retry_after_s=retry_after)
        token = self._accept(body)
        metrics.TOKEN_REFRESHES.labels(**labels, outcome="ok").inc()
        self.refreshes += 1
        self.log.info("token.refreshed", grant=grant, expires_in_s=round(token.expires
                      - token.receipt, 3), rotated=token.refresh is not None)
        return token

    async def _post(self, form: dict[str, str]) -> tuple[int, dict[str, Any], float]:
        async with routed(self._http, self._route).post(
                self.token_url, data=form, headers=self._headers, ssl=self._ssl,
                **self._proxy) as response:
            raw = await response.read()
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            try:
                body = orjson.loads(raw) if raw else {}
            except orjson.JSONDecodeError:
                body = {}
            return response.status, body if isinstance(body, dict) else {}, retry_after

    def _accept(self, body: dict[str, Any]) -> Token:
        receipt = self._clock()
        access = str(body["access_token"])
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else None
        expires = expires_at(receipt, lifetime, jwt_exp(access))
        due = refresh_at(receipt, expires, self.buffer_s)
        if expires - receipt < 2 * self.buffer_s:
            self.log.warning("token.short_lived", lifetime_s=round(expires - receipt, 3),
                             buffer_s=self.buffer_s)
        refresh = body.get("refresh_token")
        token = Token(access, refresh if isinstance(refresh, str) else None, receipt, expires, due)
        self._token = token
        return token

