"""``/healthz`` and ``/readyz`` on the metrics port against a broker of this module's own.

The broker is a dedicated single-node ``KafkaCluster`` (the session's shared broker stays
untouched): stopping it turns ``/readyz`` not-ready, naming Kafka, while ``/healthz`` stays
healthy; started again, ``/readyz`` is ready again. The stream behind the probe is a real
WebSocket source streaming from the simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from support.connector import FAST_CONNECTOR, SECRET, until
from support.memory_sink import MemorySink

from ccstream import metrics
from ccstream.config import ConnectorSettings, KafkaSettings, MetricsSettings, StreamConfig
from ccstream.probes import Probes
from connectors.policy.ratelimit import TokenBucket
from connectors.sources.base import SourceDeps, SourceStatus
from connectors.sources.websocket import WebSocketSource
from devtools import devkafka
from simulator import ClientSpec, SimSettings, Simulator

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.KafkaCluster]:
    """A single-node broker this module may stop and start."""
    cluster = devkafka.KafkaCluster(tmp_path_factory.mktemp("probe-kafka"), size=1, tied=True)
    try:
        cluster.start()
    except devkafka.DevKafkaError as err:
        pytest.fail(f"local Kafka broker unavailable: {err}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url) as answer:
        return answer.status, await answer.json()


async def test_readyz_follows_the_broker_and_healthz_the_loop(
        own_kafka: devkafka.KafkaCluster) -> None:
    """Ready while Kafka answers and the stream streams; not ready (reason: kafka) while the
    broker is down, healthy all along; ready again once the broker is back."""
    settings = MetricsSettings(kafka_check_interval_s=0.2, ready_grace_s=0.0)
    sim_settings = SimSettings(clients=(ClientSpec("acme", SECRET, platforms=("genesys",)),),
                               seed=3, rate=20.0)
    async with Simulator(sim_settings) as sim, aiohttp.ClientSession() as http:
        loop = asyncio.get_running_loop()
        stream = StreamConfig(name="g", platform="genesys", url=sim.stream_url("genesys"),
                              token_url=sim.token_url, client_id="acme", client_secret=SECRET)
        source = WebSocketSource(stream, ConnectorSettings(**FAST_CONNECTOR), SourceDeps(
            MemorySink(), TokenBucket(100.0, 20, loop.time()), loop.time, time.time,
            lambda: 0.5, http=http))
        probes = Probes.for_kafka(settings, KafkaSettings(
            bootstrap_servers=own_kafka.bootstrap_servers, request_timeout_s=2.0),
            lambda: {source.name: source.status.value})
        runner = await metrics.serve("127.0.0.1", 0, probes)
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        task = loop.create_task(source.run())
        try:
            status, body = await _get(http, base + "/readyz")
            assert status == 503 and body["ready"] is False  # nothing checked or streamed yet

            async def answers(path: str, code: int) -> bool:
                return (await _get(http, base + path))[0] == code

            await until(lambda: source.status is SourceStatus.STREAMING)
            await until(lambda: answers("/readyz", 200), timeout=20)
            status, body = await _get(http, base + "/readyz")
            assert body == {"ready": True, "kafka": "ok", "streams": {"g": "streaming"},
                            "reasons": []}

            await asyncio.to_thread(own_kafka.stop_node, 1)
            await until(lambda: answers("/readyz", 503), timeout=20)
            status, body = await _get(http, base + "/readyz")
            assert [r for r in body["reasons"] if r.startswith("kafka:")], body
            assert body["streams"] == {"g": "streaming"}
            assert (await _get(http, base + "/healthz"))[0] == 200

            await asyncio.to_thread(own_kafka.start_node, 1)
            await until(lambda: answers("/readyz", 200), timeout=30)
            assert metrics.READY._value.get() == 1
        finally:
            source.stop()
            await asyncio.wait_for(task, 5)
            await runner.cleanup()
