"""Streams through an HTTP proxy: a real proxy process on loopback (tests/support/proxy.py) that
requires Basic proxy auth and counts what went through it; the simulators behind it.

Sockets go through CONNECT tunnels (websockets), token and REST calls as proxied requests
(aiohttp), for the guide flavours and both real platforms; the proxy's password never reaches a
log line; a wrong password is a clear, non-looping failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest
from support.connector import FAST_CONNECTOR, SECRET, until
from support.memory_sink import MemorySink
from support.proxy import LoopbackProxy, LoopbackSocks

from ccstream.config import Config, ConnectorSettings, CxoneStream, parse
from ccstream.logs import JsonFormatter
from connectors.policy.ratelimit import TokenBucket
from connectors.sources import build
from connectors.sources.base import Shared, SourceDeps, SourceStatus
from connectors.sources.cxone import CxoneSource
from connectors.sources.proxy import ProxyRules, bypassed, client_session
from connectors.sources.websocket import WebSocketSource
from simulator import ClientSpec, SimSettings, Simulator

SETTINGS = ConnectorSettings(**FAST_CONNECTOR)
PASSWORD = "proxy-pa55-never-logged"


def _deps(http: aiohttp.ClientSession, sink: MemorySink) -> SourceDeps:
    loop = asyncio.get_running_loop()
    return SourceDeps(sink, TokenBucket(100.0, 20, loop.time()), loop.time, time.time,
                      lambda: 0.5, http=http, shared=Shared())


async def _stream_a_while(cfg: Config, http: aiohttp.ClientSession) -> None:
    """A guide stream's source until 20 records arrived, then stopped cleanly."""
    sink = MemorySink()
    source = build(cfg.streams[0], cfg.model_copy(update={"connector": SETTINGS}),
                   _deps(http, sink), None)
    task = asyncio.create_task(source.run())
    await until(lambda: len(sink.raw()) >= 20)
    source.stop()
    await asyncio.wait_for(task, 5)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) for r in caplog.records)


async def test_the_socket_and_the_token_request_go_through_the_proxy(
        caplog: pytest.LogCaptureFixture) -> None:
    """A guide stream with ``proxy``: the token POST is proxied, the socket is a CONNECT tunnel
    to the simulator, events arrive, and no log line holds the proxy's password."""
    caplog.set_level(logging.DEBUG)
    settings = SimSettings(clients=(ClientSpec("acme", SECRET),), seed=3, rate=50.0)
    async with LoopbackProxy(password=PASSWORD) as proxy, Simulator(settings) as sim, \
            aiohttp.ClientSession() as http:
        cfg = parse({"streams": [{
            "name": "g", "platform": "genesys", "url": sim.stream_url("genesys"),
            "token_url": sim.token_url, "client_id": "acme", "client_secret": SECRET,
            "proxy": proxy.url()}]}, environ={})
        await _stream_a_while(cfg, http)
        assert proxy.stats.tunnels[f"127.0.0.1:{sim.port}"] == 1
        assert proxy.stats.forwarded["POST /oauth/token"] == 1
        assert proxy.stats.refused == 0
        assert sim.stats["acme"].close_codes[1000] == 1
    text = _logged(caplog)
    assert "proxy.configured" in text and "proxyuser:[redacted]@" in text
    assert PASSWORD not in text


@pytest.mark.parametrize("kind", ["http", "socks5"])
async def test_a_wrong_proxy_password_fails_clearly_without_leaking_it(
        kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """The proxy refuses the credentials (an HTTP proxy's 407, a SOCKS5 authentication
    failure): the token request's refusal stops the stream with one line (no retry loop against
    the proxy), no handshake is made, and the wrong password is in no log line or error."""
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pa55-never-logged"
    settings = SimSettings(clients=(ClientSpec("acme", SECRET),), seed=3, rate=0.0)
    proxy = LoopbackProxy(password=PASSWORD) if kind == "http" else LoopbackSocks(
        password=PASSWORD)
    async with proxy, Simulator(settings) as sim, client_session() as http:
        url = (proxy.url(password=wrong, scheme="socks5") if isinstance(proxy, LoopbackSocks)
               else proxy.url(password=wrong))
        cfg = parse({"streams": [{
            "name": "g", "platform": "nice", "url": sim.stream_url("nice"),
            "token_url": sim.token_url, "client_id": "acme", "client_secret": SECRET,
            "proxy": url}]}, environ={})
        source = WebSocketSource(cfg.streams[0], SETTINGS,  # type: ignore[arg-type]
                                 _deps(http, MemorySink()))
        await asyncio.wait_for(source.run(), 10)
        assert source.status is SourceStatus.FAILED and source.fatal is not None
        assert ("407" if kind == "http" else "proxy_authentication_required") in source.fatal
        refused = proxy.socks.refused if isinstance(proxy, LoopbackSocks) else \
            proxy.stats.refused
        assert refused == 1 and sim.stats["acme"].handshakes == 0
        assert wrong not in source.fatal
    assert wrong not in _logged(caplog)


async def test_the_cxone_source_polls_through_the_proxy() -> None:
    """Discovery, the token and every poll of a CXone stream are proxied requests."""
    from simulator.cxone import CxoneSimulator, CxSettings, CxTenant

    tenant = CxTenant("acme", access_key_id="AK1", access_key_secret="ak-secret",
                      client_id="app", client_secret="app-secret", agents=4, skills=2)
    settings = CxSettings(tenants=(tenant,), seed=7, rate=20.0, time_scale=10.0)
    async with LoopbackProxy() as proxy, CxoneSimulator(settings) as sim, \
            aiohttp.ClientSession() as http:
        stream = CxoneStream(name="cx", platform="cxone", discovery_url=sim.base_url,
                             access_key_id="AK1", access_key_secret="ak-secret",
                             client_id="app", client_secret="app-secret",
                             endpoints=("agents/states",), backfill=False,
                             proxy=proxy.url()).model_copy(update={"poll_interval_s": 0.2})
        sink = MemorySink()
        source = CxoneSource(stream, SETTINGS, _deps(http, sink))
        task = asyncio.create_task(source.run())
        forwarded = proxy.stats.forwarded
        await until(lambda: len(sink.raw()) > 0 and sum(
            n for call, n in forwarded.items() if call.endswith("/agents/states")) >= 2)
        assert source.status is SourceStatus.STREAMING
        source.stop()
        await asyncio.wait_for(task, 5)
    assert forwarded["GET /.well-known/openid-configuration"] >= 1
    assert forwarded["GET /.well-known/cxone-configuration"] >= 1
    assert sum(n for call, n in forwarded.items() if call.startswith("POST ") and "token" in call)


async def test_the_genesys_cloud_source_uses_the_proxy_for_rest_token_and_socket() -> None:
    """Listing, channel, subscriptions and the token are proxied; the channel's socket is a
    CONNECT tunnel."""
    from simulator.genesys_cloud import GcClient, GcSettings, GenesysCloudSimulator

    settings = GcSettings(clients=(GcClient("acme", "gc-secret", queues=1, users=1),), seed=7,
                          rate=25.0, analytics_lag_s=0.2)
    async with LoopbackProxy() as proxy, GenesysCloudSimulator(settings) as sim, \
            aiohttp.ClientSession() as http:
        cfg = parse({"connector": FAST_CONNECTOR, "streams": [{
            "name": "gc", "platform": "genesys-cloud", "api_url": sim.base_url,
            "client_id": "acme", "client_secret": "gc-secret", "backfill": False,
            "topics": ["v2.routing.queues.{queue}.conversations"], "settle_s": 0.5,
            "proxy": proxy.url()}]}, environ={})
        sink = MemorySink()
        source = build(cfg.streams[0], cfg, _deps(http, sink), None)
        task = asyncio.create_task(source.run())
        await until(lambda: source.status is SourceStatus.STREAMING)
        source.stop()
        await asyncio.wait_for(task, 10)
        assert proxy.stats.tunnels[f"127.0.0.1:{sim.port}"] >= 1
    forwarded = proxy.stats.forwarded
    assert forwarded["POST /oauth/token"] == 1
    assert forwarded["GET /api/v2/routing/queues"] == 1
    assert forwarded["POST /api/v2/notifications/channels"] == 1


def test_environment_proxies_follow_no_proxy_and_spare_loopback() -> None:
    """HTTPS_PROXY for wss/https, HTTP_PROXY for ws/http; NO_PROXY by suffix, address, CIDR
    and port; loopback never takes an environment proxy; the stream's own proxy wins."""
    env: dict[str, Any] = {"HTTPS_PROXY": "http://corp:3128", "http_proxy": "corp-plain:8080",
                           "NO_PROXY": "internal.example, 10.0.0.0/8, api.test:8443"}
    rules = ProxyRules.from_environ(env)
    assert rules.route("wss://api.mypurecloud.com/x") is not None
    assert rules.route("wss://api.mypurecloud.com/x").bare == "http://corp:3128"  # type: ignore[union-attr]
    assert rules.route("ws://plain.example/x").bare == "http://corp-plain:8080"  # type: ignore[union-attr]
    assert rules.route("https://svc.internal.example/t") is None
    assert rules.route("https://10.1.2.3/t") is None
    assert rules.route("https://api.test:8443/t") is None
    assert rules.route("https://api.test/t") is not None
    assert rules.route("ws://127.0.0.1:9/x") is None and rules.route("ws://localhost/x") is None
    assert bypassed("https://anything.test/", "*")
    from pydantic import SecretStr

    own = rules.route("ws://127.0.0.1:9/x", SecretStr("http://u:p@own:1"))
    assert own is not None and own.origin == "stream" and "p@" not in repr(own)
    assert own.aiohttp() == {"proxy": "http://u:p@own:1"} and own.shown == "http://u:[redacted]@own:1"


def test_a_proxy_url_that_does_not_parse_is_refused_at_start() -> None:
    """A bad ``proxy`` names its key, a bad HTTPS_PROXY names the variable; SOCKS4 says why,
    SOCKS5 is taken."""
    from ccstream.config import ConfigError

    base = {"name": "g", "platform": "genesys", "url": "wss://a.test/x",
            "token_url": "https://l.test/t", "client_id": "c", "client_secret": "s"}
    for proxy, words in (("http://h:notaport", "not a URL"), ("socks4://h:1080", "SOCKS4"),
                         ("http://user-only@h:1", "without a password"),
                         ("ftp://h:1", "scheme")):
        with pytest.raises(ConfigError) as err:
            parse({"streams": [{**base, "proxy": proxy}]}, environ={})
        assert err.value.key == "streams[0].proxy" and words in err.value.problem
    with pytest.raises(ConfigError) as err:
        parse({"streams": [base]}, environ={"HTTPS_PROXY": "http://h:99999999"})
    assert err.value.key == "HTTPS_PROXY"
    for scheme in ("socks5", "socks5h"):
        cfg = parse({"streams": [{**base, "proxy": f"{scheme}://u:p@h:1080"}]},
                    environ={"HTTPS_PROXY": f"{scheme}://corp:1080"})
        route = ProxyRules.from_environ({"HTTPS_PROXY": f"{scheme}://corp:1080"}).route(
            "https://api.test/t")
        assert route is not None and route.socks and route.aiohttp() == {}
        assert cfg.streams[0].proxy is not None


# -- SOCKS5 ----------------------------------------------------------------------------------------
async def test_a_guide_stream_goes_through_a_socks5_proxy(
        caplog: pytest.LogCaptureFixture) -> None:
    """``proxy = "socks5h://user:password@host:port"``: the token request (aiohttp through
    aiohttp-socks) and the socket (websockets through python-socks) are SOCKS tunnels to the
    simulator, the names left to the proxy; events arrive; the password is in no log line."""
    caplog.set_level(logging.DEBUG)
    settings = SimSettings(clients=(ClientSpec("acme", SECRET),), seed=3, rate=50.0)
    async with LoopbackSocks(password=PASSWORD) as socks, Simulator(settings) as sim, \
            client_session() as http:
        cfg = parse({"streams": [{
            "name": "g", "platform": "genesys",
            "url": sim.stream_url("genesys").replace("127.0.0.1", "localhost"),
            "token_url": sim.token_url.replace("127.0.0.1", "localhost"),
            "client_id": "acme", "client_secret": SECRET, "proxy": socks.url()}]}, environ={})
        await _stream_a_while(cfg, http)
        target = f"localhost:{sim.port}"
        assert socks.socks.tunnels[target] >= 2  # the token request's and the socket's
        assert socks.socks.names[target] == socks.socks.tunnels[target]  # socks5h: by name
        assert socks.socks.refused == 0 and sim.stats["acme"].handshakes == 1
        assert sum(socks.stats.tunnels.values()) == 0  # nothing took the HTTP way
    text = _logged(caplog)
    assert "proxy.configured" in text and "socks5h://proxyuser:[redacted]@" in text
    assert PASSWORD not in text


async def test_the_genesys_cloud_source_goes_through_a_socks5_proxy() -> None:
    """REST calls, the token and the channel's socket of a Genesys Cloud stream: every
    connection is a SOCKS tunnel (``socks5``: ccstream resolves, the proxy gets addresses)."""
    from simulator.genesys_cloud import GcClient, GcSettings, GenesysCloudSimulator

    settings = GcSettings(clients=(GcClient("acme", "gc-secret", queues=1, users=1),), seed=7,
                          rate=25.0, analytics_lag_s=0.2)
    async with LoopbackSocks() as socks, GenesysCloudSimulator(settings) as sim, \
            client_session() as http:
        cfg = parse({"connector": FAST_CONNECTOR, "streams": [{
            "name": "gc", "platform": "genesys-cloud", "api_url": sim.base_url,
            "client_id": "acme", "client_secret": "gc-secret", "backfill": False,
            "topics": ["v2.routing.queues.{queue}.conversations"], "settle_s": 0.5,
            "proxy": socks.url(scheme="socks5")}]}, environ={})
        sink = MemorySink()
        source = build(cfg.streams[0], cfg, _deps(http, sink), None)
        task = asyncio.create_task(source.run())
        await until(lambda: source.status is SourceStatus.STREAMING and len(sink.raw()) > 0)
        source.stop()
        await asyncio.wait_for(task, 10)
        stats = sim.stats["acme"]
        assert stats.channels_created == 1 and stats.subscription_calls == 1
    assert socks.socks.tunnels[f"127.0.0.1:{sim.port}"] >= 2  # REST (pooled) and the socket
    assert not socks.socks.names and socks.socks.refused == 0


def test_socks_refusals_are_read_as_credentials_or_the_rest() -> None:
    """What python-socks says of refused or missing credentials is the 407 of SOCKS (it does
    not heal); any other refusal is a proxy error (retried)."""
    import python_socks

    from connectors.sources.proxy import socks_refusal

    assert socks_refusal(python_socks.ProxyError(
        "Username and password authentication failure")) == "proxy_authentication_required"
    assert socks_refusal(python_socks.ProxyError(
        "No acceptable authentication methods were offered")) == "proxy_authentication_required"
    assert socks_refusal(python_socks.ProxyError("Connection refused", 5)) == "proxy_error"


async def test_wrong_proxy_credentials_fail_the_real_platforms_streams_with_one_line() -> None:
    """A CXone stream (its first request is discovery, not a token) and a Genesys Cloud stream
    behind a SOCKS proxy that refuses the credentials: each fails with one line naming the
    proxy after one refused attempt, instead of backing off against the proxy."""
    from simulator.cxone import CxoneSimulator, CxSettings, CxTenant
    from simulator.genesys_cloud import GcClient, GcSettings, GenesysCloudSimulator

    wrong = "wrong-socks-pa55-never-logged"
    tenant = CxTenant("acme", access_key_id="AK1", access_key_secret="ak-secret",
                      client_id="app", client_secret="app-secret", agents=2, skills=1)
    gc = GcSettings(clients=(GcClient("acme", "gc-secret", queues=1, users=1),), seed=7)
    async with LoopbackSocks(password=PASSWORD) as socks, \
            CxoneSimulator(CxSettings(tenants=(tenant,), seed=7)) as cx_sim, \
            GenesysCloudSimulator(gc) as gc_sim, client_session() as http:
        cx = CxoneStream(name="cx", platform="cxone", discovery_url=cx_sim.base_url,
                         access_key_id="AK1", access_key_secret="ak-secret", client_id="app",
                         client_secret="app-secret", endpoints=("agents/states",),
                         backfill=False, proxy=socks.url(password=wrong))
        cx_source = CxoneSource(cx, SETTINGS, _deps(http, MemorySink()))
        await asyncio.wait_for(cx_source.run(), 10)
        assert cx_source.status is SourceStatus.FAILED and cx_source.fatal is not None
        assert "407" in cx_source.fatal and wrong not in cx_source.fatal
        assert socks.socks.refused == 1
        cfg = parse({"connector": FAST_CONNECTOR, "streams": [{
            "name": "gc", "platform": "genesys-cloud", "api_url": gc_sim.base_url,
            "client_id": "acme", "client_secret": "gc-secret", "backfill": False,
            "topics": ["v2.routing.queues.{queue}.conversations"],
            "proxy": socks.url(password=wrong)}]}, environ={})
        gc_source = build(cfg.streams[0], cfg, _deps(http, MemorySink()), None)
        await asyncio.wait_for(gc_source.run(), 10)
        assert gc_source.status is SourceStatus.FAILED and gc_source.fatal is not None
        assert "proxy" in gc_source.fatal and wrong not in gc_source.fatal
        assert socks.socks.refused == 2 and not socks.socks.tunnels
