"""The dedup worker against the real broker: duplicates, DLQ, restart recovery, bit for bit.

Workers are real subprocesses (``python -m pipeline dedup --config FILE``); records are produced
as the connector writes them (key correlationId, value the frame bytes, contract headers); clean
is read with ``isolation_level=read_committed``. Helpers here are shared by the other
``test_dedup_*`` integration files.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from support.dedup import (
    HOUR,
    T0,
    dedup_keys,
    expected_keys,
    frame,
    produce,
    read_all,
    workers,
    write_config,
)

from ccstream import records
from ccstream.config import Config
from pipeline.dedup import state as dedup_state
from pipeline.dedup.table import changelog_topic_name, state_digest

pytestmark = pytest.mark.kafka


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
