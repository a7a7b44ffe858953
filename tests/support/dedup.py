"""The dedup worker's test helpers: configurations, worker processes, producing and reading."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ccstream import records
from ccstream.config import Config, parse
from ccstream.topics import partition_count

HOUR = 3600.0


# Record timestamps (stream time) of the tests start here: two days ago, because the broker
# deletes records older than its retention (7 days) by timestamp, and Kafka 4 refuses records
# more than an hour in the future (log.message.timestamp.after.max.ms), so "20 h later" must
# still be in the past.
T0 = float(int(time.time()) - 2 * 86_400)


def write_config(path: Path, bootstrap: str, prefix: str, partitions: int = 3,
                 **dedup: Any) -> Config:
    """A TOML config whose topics and consumer group are unique to the test."""
    settings = {"app_id": f"{prefix}.dedup", "session_timeout_s": 2.0,
                "commit_interval_s": 0.2, "expected_events_per_window": 200_000,
                **dedup}
    doc: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions},
        "topics": {name: f"{prefix}.{name}" for name in ("raw", "clean", "cursors", "dlq")},
        "dedup": settings,
        "log": {"level": os.environ.get("DEDUP_TEST_LOG", "INFO"), "format": "json"},
    }
    lines: list[str] = []
    for section, values in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return parse(doc, environ={})


class Worker:
    """One dedup worker subprocess; its JSON log lines are kept in a file."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.log_file = log_file
        self._log = log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "dedup", "--config", str(config_file)],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=str(config_file.parent),
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log_file.read_bytes().splitlines():
            if line.startswith(b"{"):
                doc = orjson.loads(line)
                if doc.get("event") == name:
                    out.append(doc)
        return out

    def wait_for(self, name: str, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        tail = self.log_file.read_text(errors="replace")[-3000:]
        raise AssertionError(f"no {name!r} x{count} from worker (rc={self.proc.poll()}):\n{tail}")

    async def until(self, name: str, count: int = 1, timeout: float = 60.0) -> None:
        """``wait_for`` without blocking the event loop (a producer task may be running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(name)) >= count or self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        self.wait_for(name, count, timeout=0.0)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        self.kill()
        self._log.close()


@contextmanager
def workers(tmp_path: Path, config_file: Path) -> Iterator[Callable[[str], Worker]]:
    """Start workers on demand; every one is SIGKILLed by pid at the end, whatever happens."""
    started: list[Worker] = []

    def start(name: str) -> Worker:
        worker = Worker(config_file, tmp_path / f"{name}.log")
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.close()


async def supervised(start: Callable[[str], Worker], name: str, stop: asyncio.Event,
                     restarts: list[Worker]) -> None:
    """Run worker ``name`` like systemd would: restarted whenever it exits on its own (a worker
    stops itself, exit 70, rather than commit an unsafe state)."""
    worker = start(name)
    restarts.append(worker)
    while not stop.is_set():
        if worker.proc.poll() is not None:
            worker = start(f"{name}-{len(restarts)}")
            restarts.append(worker)
        await asyncio.sleep(0.2)


def frame(key: int, second: int = 0) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A Genesys event frame (key, value, headers) as the connector writes it to raw."""
    corr = f"corr-{key % 97}"
    ts = f"2024-01-15T10:{second % 60:02d}:{key % 60:02d}.{key % 1000:03d}Z"
    etype = f"interaction.state{key // 1000}"
    value = orjson.dumps({"eventType": etype, "correlationId": corr, "timestamp": ts,
                          "eventBody": {"n": key}})
    headers = [
        (records.H_STREAM, b"genesys-main"), (records.H_PLATFORM, b"genesys"),
        (records.H_DEDUP_KEY, records.dedup_key(etype, corr, ts).encode()),
        (records.H_RECEIVED_AT, records.rfc3339(T0).encode()),
    ]
    return corr.encode(), value, headers


async def produce(bootstrap: str, topic: str, items: list[tuple[int, float]],
                  pace_s: float = 0.0) -> None:
    """Produce frame(key) with record timestamp ``ts`` for each (key, ts), idempotently."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        sent = []
        for i, (key, ts) in enumerate(items):
            k, v, h = frame(key)
            sent.append(await producer.send(topic, v, key=k, headers=h,
                                            timestamp_ms=int(ts * 1000)))
            if pace_s and i % 50 == 49:
                await asyncio.sleep(pace_s)
        await asyncio.gather(*sent)  # every record acknowledged, or the test fails here
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 60.0,
                   settle_s: float = 1.0) -> list[Any]:
    """Every committed record of ``topic``: waits for ``expect`` of them, then ``settle_s`` more
    for any extra (a duplicate) to show up."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                isolation_level="read_committed",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
            if len(out) >= expect and settle_until is None:
                settle_until = time.monotonic() + settle_s
        return out
    finally:
        await consumer.stop()


def dedup_keys(msgs: list[Any]) -> Counter[bytes]:
    return Counter(records.header(list(m.headers), records.H_DEDUP_KEY) or b"" for m in msgs)


def expected_keys(keys: list[int]) -> set[bytes]:
    return {records.header(frame(k)[2], records.H_DEDUP_KEY) or b"" for k in keys}


def committed_offsets_reached(bootstrap: str, group: str, topic: str) -> Callable[[], Any]:
    """An async probe: True when the group's committed offsets equal the topic's end offsets."""

    async def probe() -> bool:
        partitions = await partition_count(bootstrap, topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                    enable_auto_commit=False, isolation_level="read_committed")
        await consumer.start()
        try:
            parts = [TopicPartition(topic, p) for p in range(partitions)]
            assert parts, f"topic {topic} has no partitions"
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                if (await consumer.committed(tp) or 0) < ends[tp]:
                    return False
            return True
        finally:
            await consumer.stop()

    return probe


def env_without_overrides() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CCSTREAM_")}
