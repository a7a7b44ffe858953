"""Connector paths under stress against the simulator (or a scripted platform) on loopback and
the real broker: closing notices, frames over the hard cap, frames too large for Kafka's
defaults, and the Prometheus endpoint during a run with faults.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from support.connector import (
    SECRET,
    dedup_keys,
    genesys_sim,
    make_config,
    raw_has_everything,
    read_all,
    running,
    sim_stream,
    until,
)
from support.scripted import ScriptedPlatform

from ccstream import records
from devtools.devkafka import free_port
from simulator import ClientSpec, Fault, SimSettings, Simulator

pytestmark = pytest.mark.kafka


def messages(caplog: pytest.LogCaptureFixture, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """(event, fields) of every log line bound to ``stream``, in order."""
    out = []
    for record in caplog.records:
        fields = getattr(record, "ccstream_fields", {})
        if fields.get("stream") == stream:
            out.append((record.getMessage(), fields))
    return out


async def test_closing_notice_reconnects_before_the_server_closes(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """After ``system.socket_closing`` the connector closes with 1000 and reconnects at once,
    long before the server's own close (30 s later here); the logs show why; nothing is lost."""
    caplog.set_level(logging.INFO)
    async with genesys_sim() as sim:
        config = make_config(bootstrap, topic_prefix,
                             [sim_stream(sim, "notice", "genesys", "acme")])
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 10, timeout=30)
            sim.inject(Fault(kind="closing_notice", client="acme", delay_s=30.0))
            await sim.wait_for(lambda s: s.stats["acme"].faults["closing_notice"] >= 1)
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2, timeout=10)
            stats = sim.stats["acme"]
            assert stats.closes_sent[1001] == 0  # the server never had to close it
            assert stats.close_codes[1000] >= 1  # the connector did, cleanly
            n = stats.events_sent
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= n + 10, timeout=10)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "genesys", "acme"))
    lines = messages(caplog, "notice")
    events = [event for event, _ in lines]
    notice = events.index("ws.closing_notice")
    scheduled = next(i for i, (event, fields) in enumerate(lines)
                     if event == "ws.reconnect_scheduled" and fields["cause"] == "closing_notice")
    connected = next(i for i, (event, fields) in enumerate(lines)
                     if event == "ws.connected" and fields["connection"] == 2)
    assert notice < scheduled < connected


async def test_frame_over_the_hard_cap_is_dead_lettered_and_the_stream_resumes(
        bootstrap: str, topic_prefix: str) -> None:
    """A frame above the hard cap (websockets closes with 1009) leaves a DLQ record with the
    reason; the stream reconnects and nothing emitted is missing from the raw topic."""
    clients = (ClientSpec("acme", SECRET, platforms=("nice",)),)
    settings = SimSettings(clients=clients, seed=4, rate=40.0, duplicate_rate=0.0,
                           oversized_bytes=64 * 1024)
    async with Simulator(settings) as sim:
        # hard cap = 4 x 8 KiB = 32 KiB < the 64 KiB frame
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "cap", "nice", "acme")],
                             max_frame_bytes=8192)
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= 5, timeout=30)
            sim.inject(Fault(kind="malformed", client="acme", variant="oversized"))
            await sim.wait_for(lambda s: s.stats["acme"].close_codes[1009] >= 1, timeout=10)
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2, timeout=10)
            n = sim.stats["acme"].events_sent
            await sim.wait_for(lambda s: s.stats["acme"].events_sent >= n + 10, timeout=10)
        await until(lambda: raw_has_everything(bootstrap, config, sim, "nice", "acme"))
    [dead] = await read_all(bootstrap, config.topics.dlq)
    assert records.header(dead.headers, records.H_DLQ_REASON).startswith(b"frame_over_hard_cap")
    assert dead.key == b"cap"


async def test_an_over_cap_frame_replayed_by_the_platform_is_read_once_with_a_raised_cap(
        bootstrap: str, topic_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """A platform that sends the over-cap frame again after every reconnect (it was never
    acknowledged) does not hold the stream in a 1009 loop: the next attempt reads it with a
    raised cap, the DLQ gets its bytes, and what follows is delivered."""
    caplog.set_level(logging.INFO)
    frame = big_event(64 * 1024, "over-cap")  # hard cap: 4 x 8 KiB = 32 KiB
    async with ScriptedPlatform([(frame, False)]) as platform:
        config = make_config(bootstrap, topic_prefix, [{
            "name": "replayed-cap", "platform": "genesys", "client_id": "c",
            "client_secret": "x", "url": f"ws://127.0.0.1:{platform.port}/api/v2/analytics/events",
            "token_url": f"http://127.0.0.1:{platform.port}/oauth/token"}], max_frame_bytes=8192)
        async with running(config):
            marker = "test.marker|marker|2024-01-15T10:30:00.000Z"
            await until(lambda: _has(bootstrap, config.topics.raw, marker), timeout=30)
            assert platform.handshakes == 2
    dlq = await read_all(bootstrap, config.topics.dlq)
    reasons = [records.header(r.headers, records.H_DLQ_REASON).decode().split(":")[0]
               for r in dlq]
    assert reasons == ["frame_over_hard_cap", "frame_too_large"]
    assert dlq[1].value == frame
    assert any(r.getMessage() == "ws.frame_cap_raised" for r in caplog.records)
    causes = [getattr(r, "ccstream_fields", {}).get("cause") for r in caplog.records
              if r.getMessage() == "ws.reconnect_scheduled"]
    assert causes == ["frame_too_big"]


def big_event(size: int, correlation: str) -> bytes:
    """A valid Genesys event frame of exactly ``size`` bytes."""
    head = {"eventType": "test.big", "correlationId": correlation,
            "timestamp": "2024-01-15T10:29:00.000Z", "eventBody": {"pad": ""}}
    filler = size - len(orjson.dumps(head))
    head["eventBody"] = {"pad": "x" * filler}
    frame = orjson.dumps(head)
    assert len(frame) == size
    return frame


@pytest.mark.parametrize("existing_limit", [None, 300_000])
async def test_a_frame_near_max_frame_bytes_never_wedges_the_stream(
        existing_limit: int | None, bootstrap: str, topic_prefix: str) -> None:
    """A valid event just under ``max_frame_bytes`` (1 MiB, more than Kafka's default record
    size with headers) reaches the raw topic; if an existing raw topic is too small for it, it
    goes to the DLQ with the reason. Either way one connection carries it and what follows."""
    size = 1_048_576 - 100 if existing_limit is None else 400_000
    frame = big_event(size, "big-1")
    config_streams = [{"name": "big", "platform": "genesys", "client_id": "c", "client_secret": "x",
                       "url": "", "token_url": ""}]
    async with ScriptedPlatform([(frame, False)]) as platform:
        config_streams[0].update(
            url=f"ws://127.0.0.1:{platform.port}/api/v2/analytics/events",
            token_url=f"http://127.0.0.1:{platform.port}/oauth/token")
        config = make_config(bootstrap, topic_prefix, config_streams)
        if existing_limit is not None:  # made by someone else: used as it is (contract)
            await _create_topic(bootstrap, config.topics.raw, existing_limit)
        marker = "test.marker|marker|2024-01-15T10:30:00.000Z"
        async with running(config):
            await until(lambda: _has(bootstrap, config.topics.raw, marker), timeout=30)
            assert platform.handshakes == 1
    raw = await read_all(bootstrap, config.topics.raw)
    dlq = await read_all(bootstrap, config.topics.dlq)
    if existing_limit is None:
        [big] = [r for r in raw if r.key == b"big-1"]
        assert big.value == frame and not dlq
        return
    assert not [r for r in raw if r.key == b"big-1"]
    [dead] = dlq
    assert records.header(dead.headers, records.H_DLQ_REASON).startswith(b"record_too_large")
    assert dead.value == frame


async def _create_topic(bootstrap: str, topic: str, max_message_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={
            "max.message.bytes": str(max_message_bytes)})])
    finally:
        await admin.close()


async def _has(bootstrap: str, topic: str, key: str) -> bool:
    return key in dedup_keys(await read_all(bootstrap, topic))


# -- metrics -------------------------------------------------------------------------------------


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``: (name, sorted labels) -> value."""
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as answer:
        assert answer.status == 200
        text = await answer.text()
    assert SECRET not in text and "eyJ" not in text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_endpoint_shows_reconnects_tokens_events_and_dlq(
        bootstrap: str, topic_prefix: str) -> None:
    """Scraped during a run: reconnects by cause, backoff, breaker state, token refreshes,
    events in/out/DLQ, gaps and last-event age move (or sit at 0) as the run says."""
    port = free_port()
    async with genesys_sim(token_lifetime_s=1.5) as sim:
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, "scraped", "genesys",
                                                                  "acme")])
        config = config.model_copy(update={"metrics": config.metrics.model_copy(
            update={"port": port})})
        s = "scraped"
        async with running(config):
            await sim.wait_for(lambda x: x.stats["acme"].events_sent >= 5, timeout=30)
            before = await scrape(port)
            assert value(before, "ccstream_gaps_total", stream=s) == 0
            assert value(before, "ccstream_breaker_state", stream=s) == 0
            assert ("ccstream_last_event_age_seconds", (("stream", s),)) in before
            sim.inject(Fault(kind="close", client="acme", code=1012))
            sim.inject(Fault(kind="malformed", client="acme", variant="not_json", count=2))
            await sim.wait_for(lambda x: x.stats["acme"].closes_sent[1008] >= 1
                               and x.stats["acme"].handshakes_opened >= 3
                               and x.stats["acme"].malformed_sent["not_json"] >= 2, timeout=15)
            n = sim.stats["acme"].events_sent
            await sim.wait_for(lambda x: x.stats["acme"].events_sent >= n + 5, timeout=10)
            await until(lambda: _dlq_count(bootstrap, config.topics.dlq, 2))
            after = await scrape(port)
    for cause in ("server_error", "auth_close"):
        assert value(after, "ccstream_ws_reconnects_total", stream=s, cause=cause) >= 1
    reconnects = sum(v for (name, labels), v in after.items()
                     if name == "ccstream_ws_reconnects_total" and ("stream", s) in labels)
    assert value(after, "ccstream_backoff_delay_seconds_count", stream=s) == reconnects
    assert ("ccstream_backoff_current_seconds", (("stream", s),)) in after
    refresh = {"credential": "acme", "grant": "refresh_token", "outcome": "ok"}
    assert value(after, "ccstream_token_refreshes_total", **refresh) > value(
        before, "ccstream_token_refreshes_total", **refresh)
    for name in ("ccstream_events_in_total", "ccstream_events_produced_total"):
        assert value(after, name, stream=s) > value(before, name, stream=s)
    assert value(after, "ccstream_events_dlq_total", stream=s, reason="not_json") == 2
    assert value(after, "ccstream_breaker_state", stream=s) == 0
    assert value(after, "ccstream_gaps_total", stream=s) == 0
    assert 0 <= value(after, "ccstream_last_event_age_seconds", stream=s) < 10
    assert value(after, "ccstream_last_event_timestamp_seconds", stream=s) > 0


async def _dlq_count(bootstrap: str, topic: str, count: int) -> bool:
    return len(await read_all(bootstrap, topic)) >= count
