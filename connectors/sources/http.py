"""One bounded HTTP call for the REST and polling sources: an ``Answer``, never an exception.

Genesys Cloud's channel and analytics calls and CXone's discovery, token and poll requests all
need the same few things: a timeout on the whole exchange (a poll that hangs is abandoned and its
connection closed, docs/cxone.md), the status, the ``Retry-After`` and ``Date`` headers, the body
as JSON when it is JSON, and a connection failure reported as a value the caller's policy can
classify (backoff, rediscover, fail). Error text never carries a token or secret: the URL's
query is dropped from it, and request headers are never part of it.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from connectors.policy.close_codes import retry_after_seconds
from connectors.sources.proxy import (
    PROXY_REFUSED,
    SOCKS_ERRORS,
    Route,
    aiohttp_kwargs,
    routed,
    socks_refusal,
)

PROXY_AUTH = 407                                  # the proxy refused its credentials


@dataclass(frozen=True)
class Answer:
    status: int | None            # None: no answer (connection error or timeout)
    body: Any = None              # the decoded JSON, or None (empty, not JSON)
    raw: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""               # why there was no answer, or why the body is not JSON
    timed_out: bool = False

    @property
    def retry_after_s(self) -> float:
        return retry_after_seconds(self.headers.get("retry-after"))

    @property
    def date(self) -> float | None:
        """The server's ``Date`` header as epoch seconds (its clock, not ours)."""
        value = self.headers.get("date")
        if not value:
            return None
        try:
            return parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def call(http: aiohttp.ClientSession, method: str, url: str, *, timeout_s: float,
               headers: dict[str, str] | None = None, json: Any = None,
               data: dict[str, str] | None = None, params: dict[str, str] | None = None,
               ssl: ssl_module.SSLContext | bool = True, proxy: Route | None = None) -> Answer:
    """``method url`` bounded by ``timeout_s`` in all (connect, send, read); through ``proxy``
    (HTTP CONNECT for https, absolute-form for http, or SOCKS5) when one is given.

    A proxy that refuses its credentials is status 407 whatever the proxy's kind: an HTTP
    proxy's own answer to a proxied request or to a CONNECT, and a SOCKS5 authentication failure
    read as it (``error = "proxy_authentication_required"``), so that every caller's table
    treats it as what does not heal. Any other refusal of a proxy is no answer, as a refused
    connection is (``proxy_error ...``)."""
    body = orjson.dumps(json) if json is not None else None
    sent = dict(headers or {})
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        async with asyncio.timeout(timeout_s):
            async with routed(http, proxy).request(
                    method, url, headers=sent, data=body if body else data, params=params,
                    ssl=ssl, **aiohttp_kwargs(proxy)) as response:
                raw = await response.read()
                got = {k.lower(): v for k, v in response.headers.items()}
                status = response.status
    except _FAILURES as err:
        return _unanswered(err, url, timeout_s)
    decoded: Any = None
    problem = ""
    if raw:
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            problem = "not_json"
    return Answer(status, decoded, raw, got, problem)


# what a request can raise instead of answering (aiohttp-socks' errors are not OSErrors)
_FAILURES: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError, OSError,
                                              *SOCKS_ERRORS)


def _unanswered(err: BaseException, url: str, timeout_s: float) -> Answer:  # noqa: PLR0911
    """The ``Answer`` of a request that raised ``err`` (one return per kind, most specific
    first: the exception classes nest)."""
    if isinstance(err, TimeoutError):
        return Answer(None, error=f"no answer within {timeout_s} s", timed_out=True)
    if isinstance(err, aiohttp.ClientHttpProxyError):  # the HTTP proxy refused the CONNECT
        if err.status == PROXY_AUTH:
            return Answer(PROXY_AUTH, error=PROXY_REFUSED)
        return Answer(None, error=f"proxy_error {err.status} ({_where(url)})")
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return Answer(None, error=f"certificate_verify_failed: {_where(url)}: "
                                  f"{err.certificate_error}")
    if isinstance(err, aiohttp.ClientError | OSError):
        return Answer(None, error=f"{type(err).__name__} ({_where(url)})")
    refusal = socks_refusal(err)
    if refusal == PROXY_REFUSED:
        return Answer(PROXY_AUTH, error=PROXY_REFUSED)
    return Answer(None, error=f"{refusal} SOCKS ({_where(url)})")


def _where(url: str) -> str:
    """Scheme, host and path of ``url``: never its query (where a token could be)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
