"""The dedup worker against the real broker: duplicates, DLQ, restart recovery, bit for bit.

Workers are real subprocesses (``python -m pipeline dedup --config FILE``); records are produced
as the connector writes them (key correlationId, value the frame bytes, contract headers); clean
is read with ``isolation_level=read_committed``. Helpers here are shared by the other
``test_dedup_*`` integration files.
"""

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
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ccstream import records
from ccstream.config import Config, parse
from ccstream.topics import partition_count
from pipeline.dedup import state as dedup_state
from pipeline.dedup.table import changelog_topic_name, state_digest

pytestmark = pytest.mark.kafka
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


async def test_duplicates_now_and_hours_later_reach_clean_once(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Keys re-sent at once and 20 h of event time later are in clean exactly once; bad records
    go to the DLQ with a reason and the stream goes on."""
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix)
    first = [(k, T0 + k * 0.01) for k in range(300)]
    again_now = [(k, T0 + 5.0) for k in range(0, 300, 3)]
    later = [(k, T0 + 20 * HOUR + k) for k in range(300, 400)]
    again_later = [(k, T0 + 20 * HOUR + 500) for k in range(0, 400, 7)]
    with workers(tmp_path, tmp_path / "c.toml") as start:
        worker = start("w1")
        worker.wait_for("dedup.partitions_assigned")
        await produce(bootstrap, config.topics.raw, first + again_now)
        await _produce_bad(bootstrap, config.topics.raw)
        await produce(bootstrap, config.topics.raw, later + again_later)
        clean = await read_all(bootstrap, config.topics.clean, expect=400)
        dlq = await read_all(bootstrap, config.topics.dlq, expect=1, settle_s=0.2)
        counts = dedup_keys(clean)
        assert set(counts) == expected_keys(list(range(400)))
        assert max(counts.values()) == 1
        assert all(m.value == frame(int(orjson.loads(m.value)["eventBody"]["n"]))[1]
                   for m in clean)
        assert [records.header(list(m.headers), records.H_DLQ_REASON) for m in dlq] == [
            b"value_not_json"]
        assert worker.wait_for("dedup.generation_rotated", count=2)
        assert worker.terminate() == 0


async def test_a_frame_of_the_largest_accepted_size_reaches_clean(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A raw record as large as the connector may write (a frame just under max_frame_bytes,
    plus headers: more than faust's default 1,000,000-byte requests) is forwarded to clean; one
    that large but not JSON goes to the DLQ cut to 512 KiB, as the connector cuts its own."""
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=1)
    key, small, headers = frame(7)
    body = orjson.loads(small)
    body["eventBody"] = {"n": 7, "pad": "x" * (config.connector.max_frame_bytes - 200)}
    big = orjson.dumps(body)
    assert 1_000_000 < len(big) <= config.connector.max_frame_bytes
    with workers(tmp_path, tmp_path / "c.toml") as start:
        worker = start("w1")
        worker.wait_for("dedup.partitions_assigned")
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    max_request_size=2 * len(big))
        await producer.start()
        try:
            # a malformed one first (no dedup-key header: the key comes from the value, which
            # is not JSON), then the good one: the stream goes on
            unkeyed = [(k, v) for k, v in headers if k != records.H_DEDUP_KEY]
            for value, hdrs in ((b"{" + big, unkeyed), (big, headers)):
                await producer.send_and_wait(config.topics.raw, value, key=key, headers=hdrs,
                                             timestamp_ms=int(T0 * 1000))
        finally:
            await producer.stop()
        clean = await read_all(bootstrap, config.topics.clean, expect=1, settle_s=0.5)
        dlq = await read_all(bootstrap, config.topics.dlq, expect=1, settle_s=0.2)
        assert worker.terminate() == 0
    assert [m.value for m in clean] == [big]
    assert [len(m.value) for m in dlq] == [512 * 1024]
    reason = records.header(list(dlq[0].headers), records.H_DLQ_REASON) or b""
    assert reason.startswith(b"value_not_json; value cut to the first 524288 of")


async def _produce_bad(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not json {", key=b"x",
                                     headers=[(records.H_STREAM, b"genesys-main")],
                                     timestamp_ms=int(T0 * 1000))
    finally:
        await producer.stop()


async def test_restart_recovers_the_filter_bit_for_bit(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A restarted worker rebuilds from the changelog exactly the filter the old one stopped with,
    and the changelog replayed offline gives the same bytes."""
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=2,
                          strict=True)
    items = [(k, T0 + k * 60.0) for k in range(1500)] + [(k, T0 + 1e5) for k in range(0, 1500, 4)]
    with workers(tmp_path, tmp_path / "c.toml") as start:
        first = start("w1")
        first.wait_for("dedup.partitions_assigned")
        await produce(bootstrap, config.topics.raw, items)
        await read_all(bootstrap, config.topics.clean, expect=1500, settle_s=0.5)
        assert first.terminate() == 0
        before = {d["partition"]: d["sha256"] for d in first.events("dedup.filter_digest")}
        second = start("w2")
        recovered = second.wait_for("dedup.recovered", count=2)
        after = {d["partition"]: d["sha256"] for d in recovered}
    assert set(before) == {0, 1}
    assert after == before
    offline = await _rebuild_from_changelog(bootstrap, config)
    assert offline == before


async def _rebuild_from_changelog(bootstrap: str, config: Config) -> dict[int, str]:
    from pipeline.bloom import policy_for

    d = config.dedup
    policy = policy_for(d.window_s, d.generations, d.expected_events_per_window,
                        d.false_positive_rate, d.memory_factor)
    msgs = await read_all(bootstrap, changelog_topic_name(d.app_id), expect=1, settle_s=1.0)
    states: dict[int, dedup_state.PartitionDedup] = {}
    for m in sorted(msgs, key=lambda m: (m.partition, m.offset)):
        st = states.setdefault(m.partition, dedup_state.PartitionDedup(policy, strict=d.strict))
        st.apply(m.key, m.value)
    return {p: state_digest(st) for p, st in states.items()}


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


async def test_replay_forwards_nothing_clean_already_holds(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """`ccstream replay --since` re-injects raw records; copies of events clean holds are
    dropped, and the command says how many it forwarded and dropped."""
    # re-injected records are stamped now, two days after T0: a 7-day window covers them
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=2,
                          window_s=7 * 86_400.0)
    with workers(tmp_path, tmp_path / "c.toml") as start:
        worker = start("w1")
        await worker.until("dedup.partitions_assigned")
        await produce(bootstrap, config.topics.raw, [(k, T0 + k) for k in range(120)])
        await read_all(bootstrap, config.topics.clean, expect=120, settle_s=0.2)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pipeline", "replay", "--config", str(tmp_path / "c.toml"),
            "--since", records.rfc3339(T0 + 20), "--timeout", "60",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
        clean = await read_all(bootstrap, config.topics.clean, expect=120, settle_s=1.0)
    assert proc.returncode == 0, err.decode()
    assert "100 raw records re-injected, 0 forwarded to clean, 100 dropped" in out.decode()
    assert len(clean) == 120


def test_replay_since_accepts_rfc3339_and_epoch_only() -> None:
    """--since takes RFC 3339 with a zone or epoch seconds; anything else is a config error."""
    from ccstream.config import ConfigError
    from pipeline.dedup.replay import parse_since

    assert parse_since("2024-01-15T10:30:00.000Z") == 1705314600.0
    assert parse_since("1705314600") == 1705314600.0
    for bad in ("yesterday", "2024-01-15T10:30:00"):
        with pytest.raises(ConfigError):
            parse_since(bad)
