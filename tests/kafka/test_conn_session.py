"""The connector's session loop and runner against the simulator on loopback and the real broker.

Time is scaled (``FAST_CONNECTOR``, short token lifetimes, ping every 0.3 s); every wait polls a
condition with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest
from support.connector import (
    SECRET,
    genesys_sim,
    make_config,
    raw_has_everything,
    read_all,
    running,
    sim_stream,
    until,
)

from ccstream import metrics, records
from connectors.sources.base import SourceStatus as StreamStatus
from simulator import ClientSpec, Fault, SimSettings, Simulator

pytestmark = pytest.mark.kafka


async def test_token_expiry_refreshes_once_per_expiry_and_never_reuses_it(
        bootstrap: str, topic_prefix: str) -> None:
    """A token expiring mid-stream (server 1008) costs exactly one refresh and no handshake
    with an expired token; nothing emitted is missing from the raw topic."""
    async with genesys_sim(token_lifetime_s=1.5) as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "g", "genesys", "acme")])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].closes_sent[1008] >= 2, timeout=15)
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 3, timeout=10)
            stats = sim.stats["acme"]
            assert stats.handshakes_expired_token == 0
            grants = sum(stats.token_grants.values())
            assert grants <= 1 + stats.closes_sent[1008]
            assert stats.token_grants["refresh_token"] >= 1
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))


async def test_auth_closes_refresh_and_invalid_grant_falls_back(
        bootstrap: str, topic_prefix: str) -> None:
    """1008 and 1000-with-auth-payload each cause one refresh; an invalid_grant answer to the
    refresh falls back to client credentials; the stream keeps flowing."""
    async with genesys_sim() as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "g", "genesys", "acme")])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 5)
            sim.inject(Fault(kind="close", client="acme", code=1008))
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2)
            sim.inject(Fault(kind="token_error", client="acme", status=400, count=1))
            sim.inject(Fault(kind="close", client="acme", code=1000, reason="token_expired"))
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 3)
            n = sim.stats["acme"].events_sent
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= n + 5)
            stats = sim.stats["acme"]
            assert stats.handshakes_expired_token == 0
            assert stats.token_grants["refresh_token"] == 1
            assert stats.token_grants["client_credentials"] == 2  # start + fallback
            assert stats.token_errors[400] == 1
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))


async def test_invalid_client_stops_that_stream_only(bootstrap: str, topic_prefix: str) -> None:
    """A wrong secret stops its stream with a clear error naming it; another tenant's stream
    keeps delivering; the exit status says what failed."""
    clients = (ClientSpec("acme", SECRET, platforms=("genesys",)),
               ClientSpec("other", SECRET, platforms=("nice",)))
    async with Simulator(SimSettings(clients=clients, seed=1, rate=40.0)) as sim:
        config = make_config(bootstrap, topic_prefix, [
            sim_stream(sim, "bad", "genesys", "acme", secret="wrong"),
            sim_stream(sim, "good", "nice", "other")])
        async with running(config) as (runner, task):
            await until(lambda: runner.sources and runner.sources[0].status
                        is StreamStatus.FAILED)
            n = sim.stats["other"].events_sent
            await sim.wait_for(lambda s: s.stats["other"].events_sent >= n + 10)
            assert sim.stats["acme"].handshakes == 0
            runner.request_stop()
            outcome = await task
        assert outcome.code == 1
        assert "stream bad" in outcome.message and "invalid_client" in outcome.message
        assert SECRET not in outcome.message and "wrong" not in outcome.message
        await until(lambda: raw_has_everything(bootstrap, config, sim, "nice", "other"))


async def test_retry_after_floors_are_kept_and_the_breaker_opens(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """429/503 Retry-After and 1013 retry_after are floors (no early attempt); a platform that
    keeps refusing opens the breaker after max_attempts and the runner gives up, saying so."""
    caplog.set_level(logging.INFO)
    async with genesys_sim() as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "g", "genesys", "acme")],
                             max_attempts=4)
        sim.inject(Fault(kind="handshake_error", client="acme", status=429, retry_after=0.6))
        sim.inject(Fault(kind="handshake_error", client="acme", status=503, retry_after=0.6))
        async with running(config) as (_, task):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 3, timeout=10)
            sim.inject(Fault(kind="close", client="acme", code=1013, retry_after=0.6))
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2, timeout=10)
            assert sim.stats["acme"].early_attempts == 0
            sim.inject(Fault(kind="handshake_error", client="acme", status=503,
                             retry_after=0.1, count=100))
            sim.inject(Fault(kind="close", client="acme", code=1012))
            outcome = await asyncio.wait_for(task, 20)
        assert outcome.code == 1 and "circuit breaker open for g" in outcome.message
        assert sim.stats["acme"].early_attempts == 0
        assert metrics.REGISTRY.get_sample_value("ccstream_breaker_state", {"stream": "g"}) == 2
        assert any(r.getMessage() == "breaker.opened" for r in caplog.records)


async def test_silent_drop_is_detected_by_the_ping_clock_and_resumed(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A silent connection is abandoned after a missed pong (well before the server would drop
    it) and the stream resumes from its acknowledged position: nothing emitted is missing."""
    caplog.set_level(logging.INFO)
    async with genesys_sim(silent_hold_s=30.0) as sim:
        config = make_config(bootstrap, topic_prefix, [
            sim_stream(sim, "g", "genesys", "acme", ping_interval_s=0.3)])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 10, timeout=10)
            sim.inject(Fault(kind="silent", client="acme"))
            await sim.wait_for(lambda s: s.stats["acme"].faults["silent"] >= 1, timeout=10)
            fired = asyncio.get_running_loop().time()
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2, timeout=10)
            # ping interval 0.3 + pong timeout 0.3, plus generous scheduling slack
            assert asyncio.get_running_loop().time() - fired < 0.6 + 2.0
            assert sim.stats["acme"].drops["silent"] == 0  # we left before the server dropped us
            n = sim.stats["acme"].events_sent
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= n + 10, timeout=10)
        assert any(r.getMessage() == "ws.pong_timeout" for r in caplog.records)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))


async def test_malformed_frames_go_to_the_dlq_and_the_stream_goes_on(
        bootstrap: str, topic_prefix: str) -> None:
    """Every malformed variant of the simulator (including invalid UTF-8 and oversized) is in the
    DLQ with a reason, on the same connection, and events keep coming."""
    clients = (ClientSpec("acme", SECRET, platforms=("nice",)),)
    async with Simulator(SimSettings(clients=clients, seed=5, rate=40.0)) as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "n", "nice", "acme")])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 3)
            sim.inject(Fault(kind="malformed", client="acme"))
            await sim.wait_for(lambda s: sum(s.stats["acme"].malformed_sent.values()) >= 6)
            n = sim.stats["acme"].events_sent
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= n + 10)
            assert sim.stats["acme"].handshakes_opened == 1
        dlq = await read_all(bootstrap, config.topics.dlq)
        reasons = sorted(records.header(r.headers, records.H_DLQ_REASON).decode().split(":")[0]
                         for r in dlq)
        assert len(dlq) == sum(sim.stats["acme"].malformed_sent.values())
        assert {"binary_frame", "frame_too_large", "invalid_utf8", "not_json",
                "not_an_object"} <= set(reasons)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "nice", "acme"))


async def test_log_capture_of_a_full_run_holds_no_secret(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """Refreshes, auth closes, handshake rejections and reconnects log no token, refresh token
    or client secret."""
    from ccstream.logs import JsonFormatter

    caplog.set_level(logging.DEBUG)
    async with genesys_sim(token_lifetime_s=1.0) as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "g", "genesys", "acme")])
        sim.inject(Fault(kind="handshake_error", client="acme", status=401))
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].closes_sent[1008] >= 2, timeout=15)
            sim.inject(Fault(kind="close", client="acme", code=1000, reason="unauthorized"))
            await sim.wait_for(lambda s: s.stats["acme"].token_grants["refresh_token"] >= 2)
    text = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert "token.refreshed" in text and "ws.connected" in text
    assert SECRET not in text
    assert "eyJ" not in text  # no JWT (header or payload) anywhere
    assert not re.search(r"rt-[0-9a-f]{8}", text)
    assert not re.search(r"access_token=(?!%5Bredacted%5D|\[redacted\])", text)
