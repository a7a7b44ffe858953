"""CXone discovery and password-grant tokens for one access key, shared by its streams.

docs/cxone.md §2: (1) ``GET {discovery_url}/.well-known/openid-configuration`` gives ``issuer``
and ``token_endpoint``; (2) ``POST {token_endpoint}`` with the password grant (the access key as
username/password, the app's ``client_id``/``client_secret`` in the form) gives a JWT whose
payload has ``exp`` and ``tenantId``; (3) ``GET {issuer}/.well-known/cxone-configuration?tenantId=``
gives ``api_endpoint``. Streams of one access key share this object (``Shared``), hence one token,
one discovery cache and one Retry-After clock (``holdoff``), and each of the three steps is
single-flight: one request in flight per access key, however many loops wait for it.

The token expires at the earliest of ``exp`` (read without verifying), receipt + ``expires_in``
and receipt + (``exp`` - ``iat``) (the last one keeps a server clock ahead of ours from pushing
``exp`` late on ours; ``clock_skew``) and is requested again once less than
min(``token_safety_buffer_s``, lifetime/2) is left (``token_expiry``). There is no refresh grant.
400 and 401 answers of the token endpoint are final (bad access key, bad app): no request is made
for that key again. Every request of the key waits out a ``Retry-After`` first (§3: "one
Retry-After holds for every request of that access key"). The secrets and tokens are never in a
log line, an error or a metric; the form is built once and never printed.
"""

from __future__ import annotations

import asyncio
import math
import ssl as ssl_module
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from ccstream import metrics
from ccstream.config import ConnectorSettings, CxoneStream
from ccstream.errors import CcstreamError
from ccstream.logs import BoundLogger, get_logger
from connectors.policy.holdoff import HoldOff
from connectors.policy.token_expiry import Token, expires_at, jwt_claims, refresh_at
from connectors.sources.http import Answer, call
from connectors.sources.proxy import ProxyRules, Route

T = TypeVar("T")
GRANT = "password"


class CxoneAuthError(CcstreamError):
    """A discovery or token step failed; never carries a secret or a token."""

    def __init__(self, access_key: str, step: str, status: int | None, error: str, *,
                 retriable: bool, retry_after_s: float = 0.0) -> None:
        super().__init__(f"cxone {step} for access key {access_key} failed: "
                         f"{status or 'no answer'} {error}".rstrip())
        self.step = step
        self.status = status
        self.error = error
        self.retriable = retriable
        self.retry_after_s = retry_after_s


def tls_for(stream: CxoneStream, log: BoundLogger) -> ssl_module.SSLContext | None:
    """Certificates verified by default; ``insecure_skip_verify`` is explicit and logged."""
    if not stream.discovery_url.startswith("https://"):
        return None
    context = ssl_module.create_default_context(cafile=stream.ca_file)
    if stream.insecure_skip_verify:
        log.warning("tls.verification_disabled", reason="insecure_skip_verify = true")
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
    return context


class CxoneAuth:
    def __init__(self, stream: CxoneStream, settings: ConnectorSettings,
                 http: aiohttp.ClientSession, *, wall: Callable[[], float],
                 clock: Callable[[], float], proxies: ProxyRules | None = None) -> None:
        self.access_key = stream.access_key_id
        self.discovery_url = stream.discovery_url.rstrip("/")
        self.tenant_id = stream.tenant_id
        self.log = get_logger("ccstream.connector", stream=stream.name, platform="cxone",
                              credential=stream.access_key_id)
        self.ssl: ssl_module.SSLContext | bool = tls_for(stream, self.log) or True
        self.holdoff = HoldOff()              # monotonic ``clock``
        self._proxies = proxies or ProxyRules()
        self._proxy = stream.proxy
        self._form = {"grant_type": GRANT, "username": stream.access_key_id,
                      "password": stream.access_secret(), "client_id": stream.client_id,
                      "client_secret": stream.secret()}
        self._http = http
        self._wall = wall
        self._clock = clock
        self._buffer_s = settings.token_safety_buffer_s
        self._timeout_s = settings.open_timeout_s
        self._openid: tuple[str, str] | None = None       # issuer, token_endpoint
        self.api: tuple[str, str] | None = None           # api_endpoint, area
        self.generation = 0                               # discoveries completed
        self.claimed_tenant: str | None = None
        self._token: Token | None = None
        self._fatal: CxoneAuthError | None = None
        self._flights: dict[str, asyncio.Task[Any]] = {}
        self.token_requests = 0

    # -- what the loops ask for --------------------------------------------------------------
    async def token(self) -> str:
        """A token that is not due (single-flight request when needed)."""
        if self._fatal is not None:
            raise self._fatal
        token = self._token
        if token is not None and token.usable(self._wall()):
            return token.access
        fresh: Token = await self._single("token", self._fetch_token)
        return fresh.access

    def invalidate(self, access: str) -> None:
        """``access`` got a 401: never hand it out again."""
        token = self._token
        if token is not None and token.access == access:
            self._token = Token(token.access, None, token.receipt, token.expires, -math.inf)

    async def base(self) -> str:
        """The API base (``api_endpoint``), discovered when unknown or stale."""
        if self.api is None:
            await self._single("discovery", self._discover)
        assert self.api is not None
        return self.api[0].rstrip("/")

    def stale(self, base: str) -> None:
        """§2: ``base`` answered a persistent 401, a 404, or was unreachable: discover again
        (unless another loop already did and the base is a new one)."""
        if self.api is not None and self.api[0].rstrip("/") == base:
            self.api = None
            self._openid = None

    def route(self, url: str) -> Route | None:
        """The proxy of a request to ``url`` (the stream's, else the environment's)."""
        return self._proxies.route(url, self._proxy)

    # -- the three steps ---------------------------------------------------------------------
    async def _single(self, what: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._flights.get(what)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(work())
            self._flights[what] = task
            task.add_done_callback(_retrieve)
        # shield: one waiter's stream stopping must not cancel the request the others wait for
        result: T = await asyncio.shield(task)
        return result

    async def _request(self, step: str, method: str, url: str, **kw: Any) -> Answer:
        wait = self.holdoff.wait(self._clock())
        if wait > 0:  # the key's Retry-After: no request at all before it (§9)
            raise CxoneAuthError(self.access_key, step, None, "retry_after",
                                 retriable=True, retry_after_s=wait)
        answer = await call(self._http, method, url, timeout_s=self._timeout_s, ssl=self.ssl,
                            proxy=self.route(url), **kw)
        if answer.status is not None and (answer.status == 429 or answer.status >= 500):
            self.holdoff.hold(self._clock(), answer.retry_after_s)
        return answer

    def _failed(self, step: str, answer: Answer, error: str = "") -> CxoneAuthError:
        """A failed step; a malformed 200 is retriable (the server may heal: back off)."""
        status = answer.status
        retriable = status is None or status in (200, 429) or status >= 500
        body = answer.body if isinstance(answer.body, dict) else {}
        text = error or str(body.get("error") or answer.error or "")
        return CxoneAuthError(self.access_key, step, status, text, retriable=retriable,
                              retry_after_s=answer.retry_after_s)

    async def _openid_doc(self) -> tuple[str, str]:
        if self._openid is None:
            answer = await self._request("discovery", "GET",
                                         f"{self.discovery_url}/.well-known/openid-configuration")
            doc = answer.body if answer.status == 200 and isinstance(answer.body, dict) else {}
            issuer, endpoint = doc.get("issuer"), doc.get("token_endpoint")
            if not (isinstance(issuer, str) and isinstance(endpoint, str)):
                raise self._failed("discovery", answer, "" if answer.status != 200 else
                                   "no issuer or token_endpoint")
            self._openid = (issuer.rstrip("/"), endpoint)
        return self._openid

    async def _fetch_token(self) -> Token:
        _, endpoint = await self._openid_doc()
        self.token_requests += 1
        answer = await self._request("token", "POST", endpoint, data=self._form)
        body = answer.body if isinstance(answer.body, dict) else {}
        access = body.get("access_token")
        if answer.status != 200 or not isinstance(access, str) or not access:
            err = self._failed("token", answer, "" if answer.status != 200 else "no access_token")
            metrics.TOKEN_REFRESHES.labels(self.access_key, GRANT, "error").inc()
            self._token_failed(err)
            raise err
        token = self._token_of(access, body)
        self._token = token
        metrics.TOKEN_REFRESHES.labels(self.access_key, GRANT, "ok").inc()
        self.log.info("token.refreshed", grant=GRANT,
                      expires_in_s=round(token.expires - token.receipt, 3))
        return token

    def _token_failed(self, err: CxoneAuthError) -> None:
        if not err.retriable:
            self._fatal = err  # wrong credentials do not heal: no more requests for them
            self.log.error("token.rejected", status=err.status, error=err.error)
        else:
            self.log.warning("token.failed", status=err.status, error=err.error,
                             retry_after_s=err.retry_after_s)

    def _token_of(self, access: str, body: dict[str, Any]) -> Token:
        receipt = self._wall()
        claims = jwt_claims(access) or {}
        id_token = body.get("id_token")
        id_claims = (jwt_claims(id_token) if isinstance(id_token, str) else None) or {}
        tenant = claims.get("tenantId") or id_claims.get("tenantId")
        self.claimed_tenant = tenant if isinstance(tenant, str) and tenant else None
        expires_in = _number(body.get("expires_in"))
        exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
        relative = expires_at(receipt, expires_in, None)
        if exp is not None and iat is not None and exp > iat:
            relative = min(relative, receipt + (exp - iat))
        expires = expires_at(receipt, expires_in, exp)
        if exp is not None and exp <= receipt and relative > receipt:
            # our clock is past the server's exp already: only the lifetimes can be trusted
            self.log.warning("token.clock_skew", behind_s=round(receipt - exp, 3))
            expires = relative
        else:
            expires = min(expires, relative)
        return Token(access, None, receipt, expires, refresh_at(receipt, expires, self._buffer_s))

    async def _discover(self) -> None:
        issuer, _ = await self._openid_doc()
        await self.token()
        tenant = self.tenant_id or self.claimed_tenant
        if not tenant:
            raise CxoneAuthError(self.access_key, "discovery", None,
                                 "no tenantId in the token: set tenant_id", retriable=False)
        answer = await self._request("discovery", "GET",
                                     f"{issuer}/.well-known/cxone-configuration",
                                     params={"tenantId": tenant})
        doc = answer.body if answer.status == 200 and isinstance(answer.body, dict) else {}
        api = doc.get("api_endpoint")
        if not isinstance(api, str) or not api.startswith(("http://", "https://")):
            raise self._failed("discovery", answer, "" if answer.status != 200 else
                               "no api_endpoint")
        area = doc.get("area")
        self.api = (api, area if isinstance(area, str) else "")
        self.generation += 1


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # every waiter got it; avoids "exception was never retrieved"

