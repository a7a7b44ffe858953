"""``ccstream check``'s platform half: each credential's token and each endpoint's handshake.

Every check is one bounded request with the stream's own TLS and proxy settings, and writes
nothing: the guide flavours' sockets are closed with 1000 before an event is read, Genesys
Cloud gets one listing page (never a channel), CXone one ``updatedSince`` poll per endpoint
whose rows are dropped. A credential shared by several streams is checked once.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable

import aiohttp
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from ccstream.commands.check import Line
from ccstream.config import ConnectorSettings, CxoneStream, GenesysCloudStream, StreamConfig
from ccstream.logs import get_logger
from ccstream.timefmt import rfc3339
from connectors.kafka.delivery import safe_error
from connectors.platforms import adapter_for
from connectors.policy import gc_topics
from connectors.policy.session import CERT_ERROR, TLS_HINT
from connectors.sources.cxone_auth import CxoneAuth, CxoneAuthError
from connectors.sources.genesys_cloud_rest import QUEUES, USERS
from connectors.sources.genesys_cloud_rest import tls_context as gc_tls
from connectors.sources.http import Answer, call
from connectors.sources.proxy import ProxyRules, environment_rules
from connectors.sources.regions import endpoint_label
from connectors.sources.wire import probe_handshake, tls_context
from connectors.tokens import TokenError, TokenManager

AnyOfThree = StreamConfig | GenesysCloudStream | CxoneStream


def _token_fix(err: TokenError, secret_key: str) -> str:
    if err.error == "invalid_client":
        return f"check client_id and the client secret ({secret_key})"
    if err.error == CERT_ERROR:
        return TLS_HINT
    if err.status == 407 or err.error == "proxy_authentication_required":
        return "check the proxy's user and password (proxy / HTTPS_PROXY)"
    if err.status is None:
        return "check the token URL, the network and the proxy"
    if err.status == 429 or err.status >= 500:
        return "the token endpoint is busy or failing: try again later"
    return "check the token URL and the client's grant type"


def _answer_fix(status: int | None, permission: str) -> str:
    if status == 401:
        return "the token was refused: check that the credential belongs to this host/region"
    if status == 403:
        return f"grant the client {permission}"
    if status in (429, 503):
        return "the platform is busy: try again after its Retry-After"
    if status is None:
        return "check the URL, the network and the proxy"
    return "check the URL"


class Probe:
    def __init__(self, settings: ConnectorSettings, http: aiohttp.ClientSession,
                 wall: Callable[[], float], rules: ProxyRules | None = None) -> None:
        self.settings = settings
        self.http = http
        self.wall = wall
        self.rules = rules or environment_rules()
        self.log = get_logger("ccstream.check")
        self._tokens: dict[tuple[str, ...], str | None] = {}  # credential -> token (None: failed)

    def proxies(self, stream: AnyOfThree) -> list[Line]:
        """The proxy each of the stream's hosts goes through (password redacted)."""
        if isinstance(stream, StreamConfig):
            urls = [u for e in stream.endpoint_list() for u in (e.url, e.token_url or "")]
        elif isinstance(stream, GenesysCloudStream):
            urls = [stream.api_url, stream.login()]
        else:
            urls = [stream.discovery_url]
        routes = {}
        for url in urls:
            route = self.rules.route(url, stream.proxy)
            if route is not None:
                routes[route.shown, route.origin] = route
        return [Line(True, f"proxy {stream.name}", f"{shown} (from the {origin})")
                for shown, origin in routes]

    async def _token(self, key: tuple[str, ...], what: str, manager: TokenManager,
                     secret_key: str) -> tuple[Line | None, str | None]:
        if key in self._tokens:
            return None, self._tokens[key]  # checked already for another stream
        try:
            token: str | None = await manager.get()
            line = Line(True, what, "token issued")
        except TokenError as err:
            token = None
            line = Line(False, what, f"{err.status or 'no answer'} {err.error}",
                        _token_fix(err, secret_key))
        self._tokens[key] = token
        return line, token

    # -- the guide's flavours ----------------------------------------------------------------
    async def guide(self, stream: StreamConfig) -> list[Line]:
        s, lines = self.settings, []
        context = tls_context(stream, self.log)
        adapter = adapter_for(stream.platform)
        for endpoint in stream.endpoint_list():
            token_url = endpoint.token_url or ""
            manager = TokenManager(
                token_url, stream.client_id, stream.secret(), buffer_s=s.token_safety_buffer_s,
                http=self.http, clock=self.wall, log=self.log,
                ssl=context if token_url.startswith("https") else None,
                proxy=self.rules.route(token_url, stream.proxy))
            line, token = await self._token(
                ("guide", token_url, stream.client_id), f"credential {stream.client_id} at "
                f"{endpoint_label(token_url)}", manager, _secret_key(stream))
            lines += [line] if line else []
            what = f"endpoint {stream.name} {endpoint_label(endpoint.url)}"
            if token is None:
                lines.append(Line(False, what, "not tried: no token", "fix the credential"))
                continue
            lines.append(await self._handshake(stream, what, adapter.url(
                endpoint.url, token, None, stream.types), context))
        return lines

    async def _handshake(self, stream: StreamConfig, what: str, url: str,
                         context: ssl.SSLContext | None) -> Line:
        s = self.settings
        try:
            await probe_handshake(url, max_frame_bytes=s.max_frame_bytes,
                                  open_timeout_s=s.open_timeout_s,
                                  close_timeout_s=s.close_timeout_s, context=context,
                                  proxy=self.rules.route(url, stream.proxy))
        except InvalidStatus as err:
            status = err.response.status_code
            return Line(False, what, f"the handshake was answered {status}",
                        _answer_fix(status, "the permission for this stream (its OAuth scope)"))
        except ssl.SSLCertVerificationError as err:
            return Line(False, what, f"certificate not verified ({err.verify_message})",
                        TLS_HINT)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as err:
            return Line(False, what, f"cannot connect ({safe_error(err)})",
                        _answer_fix(None, ""))
        return Line(True, what, "handshake answered 101; closed with 1000, no event read")

    # -- Genesys Cloud -------------------------------------------------------------------------
    async def genesys_cloud(self, stream: GenesysCloudStream) -> list[Line]:
        s, context, login = self.settings, gc_tls(stream, self.log), stream.login()
        manager = TokenManager(
            login + "/oauth/token", stream.client_id, stream.secret(),
            buffer_s=s.token_safety_buffer_s, http=self.http, clock=self.wall, log=self.log,
            ssl=context if login.startswith("https") else None,
            proxy=self.rules.route(login, stream.proxy))
        line, token = await self._token(("genesys-cloud", login, stream.client_id),
                                        f"credential {stream.client_id} at {login}", manager,
                                        _secret_key(stream))
        lines = [line] if line else []
        what = f"endpoint {stream.name} {stream.api_url}"
        if token is None:
            return [*lines, Line(False, what, "not tried: no token", "fix the credential")]
        try:
            need = gc_topics.needs(gc_topics.parse_templates(stream.name, stream.topics))
        except gc_topics.TopicError as err:
            return [*lines, Line(False, f"stream {stream.name}", str(err), "correct topics")]
        path = (QUEUES if "queue" in need and stream.queues is None else
                USERS if "user" in need and stream.users is None else None)
        if path is None:
            return [*lines, Line(True, what, "token issued; the topics need no listing, and a "
                                            "channel is not made by a check")]
        api = stream.api_url.rstrip("/")
        answer = await call(self.http, "GET", api + path, timeout_s=s.open_timeout_s,
                            headers={"Authorization": f"Bearer {token}"},
                            params={"pageSize": "1", "pageNumber": "1"},
                            ssl=context if api.startswith("https") else True,
                            proxy=self.rules.route(api, stream.proxy))
        return [*lines, _read(what, f"GET {path} page 1", answer,
                              "routing:queue:view" if path == QUEUES else "directory:user:view")]

    # -- CXone ---------------------------------------------------------------------------------
    async def cxone(self, stream: CxoneStream) -> list[Line]:
        auth = CxoneAuth(stream, self.settings, self.http, wall=self.wall, clock=time.monotonic,
                         proxies=self.rules)
        what = f"credential {stream.access_key_id} at {stream.discovery_url}"
        try:
            token = await auth.token()
            base = await auth.base()
        except CxoneAuthError as err:
            fix = ("check access_key_id / access_key_secret and the app's client_id / "
                   "client_secret" if err.status in (400, 401) else _answer_fix(err.status, ""))
            return [Line(False, what, str(err), fix)]
        lines = [Line(True, what, f"discovery and token: API base {base}")]
        since = rfc3339(self.wall() - stream.poll_interval_s)
        for endpoint in stream.endpoints:
            url = f"{base}/incontactapi/services/{stream.api_version}/{endpoint}"
            answer = await call(self.http, "GET", url, timeout_s=self.settings.open_timeout_s,
                                headers={"Authorization": f"Bearer {token}",
                                         "Accept": "application/json"},
                                params={"updatedSince": since}, ssl=auth.ssl,
                                proxy=auth.route(url))
            lines.append(_read(f"endpoint {stream.name} {endpoint}", "one updatedSince poll",
                               answer, "the Real-Time Data permission for it"))
        return lines


def _read(what: str, request: str, answer: Answer, permission: str) -> Line:
    if answer.status in (200, 204, 304):
        return Line(True, what, f"{request} answered {answer.status} (read only, rows dropped)")
    detail = f"{request}: {answer.status or 'no answer'}" + (
        f" ({answer.error})" if answer.error else "")
    return Line(False, what, detail, _answer_fix(answer.status, permission))


def _secret_key(stream: AnyOfThree) -> str:
    env = stream.client_secret_env
    return f"client_secret_env = {env}" if env else "client_secret"
