"""Which HTTP(S) CONNECT proxy a URL goes through: the stream's ``proxy``, else the environment.

docs/operations.md, "Proxies". One decision for every connection a stream makes (sockets, token
requests, REST calls and polls), so that a socket never goes direct while its token request goes
through the proxy, or the reverse:

* a stream's ``proxy = "http://user:password@host:port"`` applies to every URL of that stream;
* otherwise ``HTTPS_PROXY`` (``wss://``, ``https://``) or ``HTTP_PROXY`` (``ws://``, ``http://``)
  of the environment, unless ``NO_PROXY`` names the host (``*``, a host or domain suffix, an
  address, a CIDR block, each optionally ``:port``). Loopback hosts never take an environment
  proxy (as Go's and most tools' rule): a local simulator or sidecar is not behind it.

websockets (``connect(proxy=...)``, 15+) and aiohttp (``proxy=`` per request) both speak CONNECT;
ccstream passes the proxy to each explicitly, so that neither library reads the environment on
its own with different rules. The proxy's password is a secret: ``Route`` never shows it
(``repr``, ``shown``), and the log redaction (``ccstream.logs``) strips it from any URL.

SOCKS5 (``socks5://``: ccstream resolves the target's name; ``socks5h://``: the proxy does, as
curl reads the two): websockets speaks it through python-socks; aiohttp cannot take a SOCKS proxy
per request, so a request through one goes through an aiohttp session of its own whose connector
(aiohttp-socks) opens every connection through that proxy (``routed``), one per proxy URL and
base session, closed with it (``client_session``). python-socks and aiohttp-socks are used here
only: their errors become ``socks_refusal``'s reading (``proxy_authentication_required`` when the
proxy refused the credentials, which do not heal; ``proxy_error`` otherwise).
"""

from __future__ import annotations

import ipaddress
import os
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiohttp
import aiohttp_socks
import python_socks
from pydantic import SecretStr

from ccstream.config import environment_proxies

if TYPE_CHECKING:
    from connectors.sources.base import SourceDeps

_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class Route:
    """A proxy to go through; ``url`` carries the credentials (websockets wants them there)."""

    url: str = field(repr=False)
    origin: str = "stream"     # "stream" (the stream's ``proxy``) or "environment"

    @property
    def bare(self) -> str:
        """The proxy's URL without credentials (aiohttp's ``proxy=``)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"

    @property
    def shown(self) -> str:
        """What logs and ``ccstream check`` print: the bare URL, ``user:[redacted]@`` kept."""
        user = urlsplit(self.url).username
        if user is None:
            return self.bare
        scheme, rest = self.bare.split("://", 1)
        return f"{scheme}://{unquote(user)}:[redacted]@{rest}"

    @property
    def socks(self) -> bool:
        """A SOCKS5 proxy (``socks5://`` or ``socks5h://``), not an HTTP CONNECT one."""
        return urlsplit(self.url).scheme in SOCKS_SCHEMES

    def aiohttp(self) -> dict[str, Any]:
        """The keyword arguments of one aiohttp request through this HTTP proxy (a SOCKS proxy
        is the session's connector instead: ``routed``). aiohttp turns the URL's credentials
        into ``Proxy-Authorization`` itself, for a CONNECT (``https://``) and for a proxied
        ``http://`` request alike; ``proxy_headers`` would reach only the first. Error text
        never carries it: ``http.call`` and the token manager report an error's type, and the
        log redaction strips any URL's password."""
        return {} if self.socks else {"proxy": self.url}

    def __repr__(self) -> str:
        return f"Route({self.shown!r}, origin={self.origin!r})"


def aiohttp_kwargs(route: Route | None) -> dict[str, Any]:
    """``route.aiohttp()``, or nothing for a direct request."""
    return route.aiohttp() if route is not None else {}


SOCKS_SCHEMES = ("socks5", "socks5h")
# the aiohttp sessions that go through a SOCKS proxy, per base session and proxy URL
_SOCKS_SESSIONS: weakref.WeakKeyDictionary[aiohttp.ClientSession,
                                           dict[str, aiohttp.ClientSession]] = (
    weakref.WeakKeyDictionary())


def routed(http: aiohttp.ClientSession, route: Route | None) -> aiohttp.ClientSession:
    """The session a request through ``route`` is made with: ``http`` itself when direct or
    through an HTTP proxy (``aiohttp_kwargs`` adds ``proxy=``), else the SOCKS session of that
    proxy, made on first use (the caller's event loop) and closed with ``http`` by
    ``close_routed``."""
    if route is None or not route.socks:
        return http
    sessions = _SOCKS_SESSIONS.setdefault(http, {})
    session = sessions.get(route.url)
    if session is None or session.closed:
        parts = urlsplit(route.url)
        connector = aiohttp_socks.ProxyConnector(
            host=parts.hostname or "", port=parts.port or 1080,
            proxy_type=python_socks.ProxyType.SOCKS5,
            username=unquote(parts.username) if parts.username is not None else None,
            password=unquote(parts.password) if parts.password is not None else None,
            rdns=parts.scheme == "socks5h")
        session = aiohttp.ClientSession(connector=connector)
        sessions[route.url] = session
    return session


async def close_routed(http: aiohttp.ClientSession) -> None:
    """Close the SOCKS sessions ``routed`` made for ``http``."""
    for session in _SOCKS_SESSIONS.pop(http, {}).values():
        await session.close()


@asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session for a process's streams, and the SOCKS sessions made for it, closed
    together on the way out."""
    async with aiohttp.ClientSession() as http:
        try:
            yield http
        finally:
            await close_routed(http)


# any proxy's refusal of its credentials, as every caller reads it (an HTTP 407, a SOCKS
# authentication failure): they do not heal
PROXY_REFUSED = "proxy_authentication_required"
# what python-socks says when the proxy would not take the credentials (or wanted some)
_SOCKS_AUTH = ("authentication", "no acceptable authentication")
# everything either library raises for a SOCKS proxy (aiohttp-socks' own are not OSErrors)
SOCKS_ERRORS: tuple[type[Exception], ...] = (
    python_socks.ProxyError, python_socks.ProxyConnectionError, python_socks.ProxyTimeoutError,
    aiohttp_socks.ProxyError, aiohttp_socks.ProxyConnectionError, aiohttp_socks.ProxyTimeoutError)


def socks_refusal(err: BaseException) -> str:
    """A SOCKS proxy's refusal as ccstream reads it: ``proxy_authentication_required`` (wrong
    or missing credentials: they do not heal, as an HTTP proxy's 407) or ``proxy_error``."""
    text = str(err).lower()
    return (PROXY_REFUSED if any(w in text for w in _SOCKS_AUTH)
            else "proxy_error")


def _host_port(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "wss": 443, "http": 80, "ws": 80}.get(parts.scheme)
    return (parts.hostname or "").lower(), parts.port or default


def _loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _entry_matches(entry: str, host: str, port: int | None) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if entry == "*":
        return True
    name, _, want_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
    if want_port and (not want_port.isdigit() or int(want_port) != port):
        return False
    name = name.strip("[]")
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False)
    except ValueError:
        pass
    name = name.lstrip("*").lstrip(".")
    return host == name or host.endswith("." + name)


def bypassed(url: str, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` (comma-separated) exempts ``url``'s host (curl's reading)."""
    host, port = _host_port(url)
    return any(_entry_matches(e, host, port) for e in no_proxy.split(","))


@dataclass(frozen=True)
class ProxyRules:
    """The environment's proxies, read once (``from_environ``)."""

    https: str | None = None
    http: str | None = None
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyRules:
        """``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (a bad value: ``ConfigError`` naming the
        variable; ``ccstream.config.parse`` refuses it at start already)."""
        found = environment_proxies(environ)
        return cls(found.get("https"), found.get("http"), found.get("no_proxy", ""))

    def route(self, url: str, configured: SecretStr | None = None) -> Route | None:
        """The proxy ``url`` goes through, or None (direct)."""
        if configured is not None:
            return Route(configured.get_secret_value(), "stream")
        secure = urlsplit(url).scheme in ("https", "wss")
        chosen = self.https if secure else (self.http or self.https)
        host, _ = _host_port(url)
        if chosen is None or _loopback(host) or bypassed(url, self.no_proxy):
            return None
        return Route(chosen, "environment")


def environment_rules() -> ProxyRules:
    """This process's environment proxies (the I/O half: reads ``os.environ``)."""
    return ProxyRules.from_environ(os.environ)


def proxy_rules(deps: SourceDeps) -> ProxyRules:
    """The environment's proxies, read once per process (``Shared``)."""
    return deps.shared.get(("proxy-rules",), environment_rules)
