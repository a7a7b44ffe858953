"""The connector's test helpers: configurations, a running Runner, reading topics back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from ccstream import records
from ccstream.config import Config, parse
from ccstream.topics import (
    partition_count,
)
from connectors.runner import Outcome, Runner
from simulator import ClientSpec, SimSettings, Simulator

# scaled time for every loop test: 1 platform second is a few milliseconds here
FAST_CONNECTOR: dict[str, Any] = {
    "backoff_base_s": 0.05, "backoff_max_s": 0.4, "breaker_cooldown_s": 30.0,
    "max_attempts": 8, "retry_window_s": 60.0, "reconnects_per_second": 100.0,
    "reconnect_burst": 20, "pong_timeout_s": 0.3, "open_timeout_s": 3.0, "close_timeout_s": 1.0,
    "cursor_commit_interval_s": 0.2, "grace_period_s": 6.0, "token_safety_buffer_s": 300.0,
}


def make_config(bootstrap: str, prefix: str, streams: list[dict[str, Any]],
                **connector: Any) -> Config:
    """A configuration whose topics are unique to the test and whose time is scaled."""
    return parse({
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 2, "linger_ms": 2},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "connector": {**FAST_CONNECTOR, **connector},
        "streams": streams,
    }, environ={})


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end offsets."""
    tps = [TopicPartition(topic, p) for p in range(await partition_count(bootstrap, topic))]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(batch)
        return out
    finally:
        await consumer.stop()


def dedup_keys(raw_records: list[Any]) -> set[str]:
    return {records.header(r.headers, records.H_DEDUP_KEY).decode() for r in raw_records}


SECRET = "s3cret-value-never-logged"


def sim_stream(sim: Simulator, name: str, platform: str, client: str, secret: str = SECRET,
               **extra: Any) -> dict[str, Any]:
    return {"name": name, "platform": platform, "url": sim.stream_url(platform),
            "token_url": sim.token_url, "client_id": client, "client_secret": secret, **extra}


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[tuple[Runner, asyncio.Task[Outcome]]]:
    """The runner in a task; stopped (bounded) on the way out whatever happened."""
    runner = Runner(config)
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        # start-up (topics, producer, cursor read-back) can be slow on a fresh, busy broker
        await until(lambda: runner.sources or task.done(), timeout=60)
        yield runner, task
    finally:
        runner.request_stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 20)


async def until(predicate: Callable[[], Any], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _value(predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.05)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


async def raw_has_everything(bootstrap: str, config: Config, sim: Simulator, platform: str,
                             client: str) -> bool:
    emitted = sim.ledger.keys(platform, client)  # type: ignore[arg-type]
    got = dedup_keys(await read_all(bootstrap, config.topics.raw))
    return bool(emitted) and emitted <= got


def genesys_sim(**kw: Any) -> Simulator:
    base: dict[str, Any] = {"clients": (ClientSpec("acme", SECRET, platforms=("genesys",)),),
                            "seed": 3, "rate": 40.0, "duplicate_rate": 0.0}
    return Simulator(SimSettings(**{**base, **kw}))
