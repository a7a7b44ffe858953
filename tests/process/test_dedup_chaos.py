"""Whole-process chaos against the real broker: kill -9 of dedup workers with a producer writing.

The proof of exactly once across crashes: whatever the point a worker dies at (starting,
recovering, mid-batch, mid-commit), every distinct key is in clean exactly once, read with
``read_committed``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from support.dedup import (
    T0,
    Worker,
    committed_offsets_reached,
    dedup_keys,
    expected_keys,
    produce,
    read_all,
    supervised,
    workers,
    write_config,
)

from ccstream.config import Config

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _stream(distinct: int, rng: random.Random) -> list[tuple[int, float]]:
    """Each key once, a third of them re-sent (at once or much later in stream time)."""
    items = [(k, T0 + k * 10.0) for k in range(distinct)]
    for k in rng.sample(range(distinct), distinct // 3):
        at = rng.randrange(k, distinct + 1)
        items.insert(min(at + 1, len(items)), (k, T0 + at * 10.0))
    return items


async def _wait(probe: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.5)
    return False


async def _drained(config: Config, distinct: int, stop: asyncio.Event,
                   supervisor: asyncio.Task[None], restarts: list[Worker],
                   ) -> tuple[Counter[bytes], set[bytes]]:
    """Wait until the supervised worker has committed the whole raw topic, stop it, and read
    clean: how often each dedup key is there, and which distinct keys are missing."""
    bootstrap = config.kafka.bootstrap_servers
    done = committed_offsets_reached(bootstrap, config.dedup.app_id, config.topics.raw)
    finished = await _wait(done, timeout=120)
    stop.set()
    await supervisor
    assert finished, restarts[-1].log_file.read_text()[-2000:]
    clean = await read_all(bootstrap, config.topics.clean, expect=distinct, settle_s=2.0)
    counts = dedup_keys(clean)
    return counts, expected_keys(list(range(distinct))) - set(counts)


async def _kill_at_random_points(start: object, rounds: int, rng: random.Random,
                                 started: list[Worker] | None = None) -> int:
    """Start a worker and SIGKILL it, ``rounds`` times; returns kills that hit a worker that
    had already recovered and was processing (``started``: every worker, appended)."""
    mid_stream = 0
    for i in range(rounds):
        worker: Worker = start(f"w{i}")  # type: ignore[operator]
        if started is not None:
            started.append(worker)
        if i % 2 == 0:  # mid-stream: after its recovery, while records flow
            await worker.until("dedup.recovered", timeout=90)
            await asyncio.sleep(rng.uniform(0.2, 2.0))
            mid_stream += 1
        else:  # anywhere from start-up through recovery into processing
            await asyncio.sleep(rng.uniform(0.5, 8.0))
        worker.kill()
    return mid_stream


async def test_ten_kill_9_with_a_producer_writing_lose_and_duplicate_nothing(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Ten SIGKILLs of the dedup worker at random points while a producer writes: every
    distinct key is in clean exactly once."""
    rng = random.Random(20240115)
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=3)
    distinct = 2400
    items = _stream(distinct, rng)
    with workers(tmp_path, tmp_path / "c.toml") as start:
        first = start("w-setup")  # creates the topics, then dies like the others
        await first.until("dedup.partitions_assigned")
        first.kill()
        producer = asyncio.create_task(
            produce(bootstrap, config.topics.raw, items, pace_s=1.2))
        killed: list[Worker] = []
        mid_stream = await _kill_at_random_points(start, 10, rng, killed)
        await producer
        stop, finals = asyncio.Event(), []
        supervisor = asyncio.create_task(supervised(start, "w-final", stop, finals))
        counts, missing = await _drained(config, distinct, stop, supervisor, finals)
    assert mid_stream == 5
    # each worker after a kill sent the LeaveGroup of the member its killed predecessor had
    # recorded (members.py; "unknown_member" when the 2 s session had already ended it)
    removals = [e for w in [*killed, *finals] for e in w.events("dedup.predecessor_removed")]
    assert len(removals) >= mid_stream
    assert {e["outcome"] for e in removals} <= {"removed", "unknown_member"}
    assert (len(missing), sorted(missing)[:5]) == (0, [])
    assert [k for k, n in counts.items() if n > 1] == []


async def test_two_workers_one_killed_survivor_takes_its_partitions(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Two workers share the partitions; one is SIGKILLed mid-stream; the survivor logs taking
    over its partitions, and every distinct key is in clean exactly once."""
    rng = random.Random(7)
    config = write_config(tmp_path / "c.toml", bootstrap, topic_prefix, partitions=4)
    distinct = 1500
    items = _stream(distinct, rng)
    with workers(tmp_path, tmp_path / "c.toml") as start:
        victim = start("victim")
        await victim.until("dedup.partitions_assigned")
        stop, survivors = asyncio.Event(), []
        supervisor = asyncio.create_task(supervised(start, "survivor", stop, survivors))
        while not survivors:
            await asyncio.sleep(0.1)
        survivor = survivors[0]
        await survivor.until("dedup.partitions_assigned")
        # both own partitions once the victim has rebalanced to make room for the survivor
        await victim.until("dedup.partitions_revoked")
        producer = asyncio.create_task(
            produce(bootstrap, config.topics.raw, items, pace_s=0.5))
        await survivor.until("dedup.recovered")
        await asyncio.sleep(rng.uniform(3.0, 5.0))
        rebalances = victim.events("dedup.partitions_assigned") + victim.events(
            "dedup.partitions_revoked")
        held = set(max(rebalances, key=lambda e: e["generation"])["active"])
        victim.kill()
        await producer
        takeover = await _takeover(survivors, held)
        counts, missing = await _drained(config, distinct, stop, supervisor, survivors)
    assert held and held < {0, 1, 2, 3} and held <= set(takeover["partitions"])
    assert takeover["active"] == [0, 1, 2, 3]
    assert (len(missing), sorted(missing)[:5]) == (0, [])
    assert [k for k, n in counts.items() if n > 1] == []


async def _takeover(survivors: list[Worker], held: set[int]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for survivor in survivors:
            for event in survivor.events("dedup.partitions_assigned"):
                if held <= set(event["partitions"]):
                    return event
        await asyncio.sleep(0.2)
    raise AssertionError(f"survivor never took {held}")
