"""Delivery settles the records of each partition in order with one done-callback per batch
(``connectors.kafka.delivery``): the resume point still moves only over the acknowledged prefix,
and a failure is still reported when its batch completes, whatever another partition does (a
scripted sink whose futures the test resolves; no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from ccstream.config import StreamConfig
from ccstream.logs import get_logger
from connectors.kafka.delivery import Delivery
from connectors.platforms import Frame, adapter_for

STREAM = StreamConfig(name="n", platform="nice", url="ws://127.0.0.1/x",
                      token_url="http://127.0.0.1/t", client_id="c", client_secret="s")


def _frame(seq: int, corr: str) -> Frame:
    raw = orjson.dumps({"eventId": f"e{seq}", "eventType": "screenpop", "correlationId": corr,
                        "timestamp": "2024-01-15T10:30:00.000Z", "cursor": f"K{seq}"})
    return adapter_for("nice").parse(raw, False, 4096)


class ScriptedSink:
    """Every record's future stays pending until the test resolves it; the partition is the
    correlation id's first letter (``a`` -> 0, ``b`` -> 1)."""

    raw_limit = 1_048_576

    def __init__(self, *, lanes: bool = True) -> None:
        self.futures: list[asyncio.Future[Any]] = []
        if lanes:
            self.lane_of = lambda frame: ord(frame.correlation_id[0]) - ord("a")

    async def send_event(self, stream: str, platform: str, frame: Frame,
                         received_at: float) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> asyncio.Future[Any]:
        return await self.send_event(stream, platform, _frame(0, "dlq"), received_at)

    async def refresh_limits(self) -> None:
        return None


def _delivery(sink: ScriptedSink) -> tuple[Delivery, list[int]]:
    failures: list[int] = []
    delivery = Delivery(STREAM, sink, adapter_for("nice").progress(None, 0.0), lambda: 0.0,
                        log=get_logger("test"), on_failure=lambda: failures.append(1))
    return delivery, failures


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_the_resume_point_moves_only_over_the_acknowledged_prefix() -> None:
    """Partition 1's batch acknowledged before partition 0's: nothing moves until the oldest
    record is acknowledged, then everything acknowledged before the first pending one does."""
    sink = ScriptedSink()
    delivery, _ = _delivery(sink)
    for seq, corr in enumerate(["a1", "b1", "a2", "b2", "a3"], start=1):
        await delivery.event(_frame(seq, corr))
    one, two, three, four, five = sink.futures
    for future in (two, four):  # partition 1's batch
        future.set_result(None)
    await _settle()
    assert delivery.progress.resume_point() is None
    for future in (one, three):  # partition 0's first batch; its second (K5) still pending
        future.set_result(None)
    await _settle()
    assert delivery.progress.resume_point() == "K4"
    assert delivery.in_flight == 1
    five.set_result(None)
    await _settle()
    assert delivery.progress.resume_point() == "K5"
    assert delivery.in_flight == 0


async def test_a_failure_is_reported_while_another_partition_is_still_pending() -> None:
    """Partition 0's oldest record pending; partition 1's batch fails: the failure is reported
    at once, and the resume point never moves over the failed record."""
    sink = ScriptedSink()
    delivery, failures = _delivery(sink)
    await delivery.event(_frame(1, "a1"))
    await delivery.event(_frame(2, "b1"))
    sink.futures[1].set_exception(ConnectionError("broker gone"))
    await _settle()
    assert failures == [1]
    sink.futures[0].set_result(None)
    await _settle()
    assert delivery.progress.resume_point() == "K1"
    assert failures == [1]


async def test_a_sink_without_partitions_gets_every_record_settled_in_one_lane() -> None:
    """A sink that does not say partitions: records acknowledged in any order all settle, each
    once, events and DLQ records alike."""
    sink = ScriptedSink(lanes=False)
    delivery, failures = _delivery(sink)
    for seq in range(1, 5):
        await delivery.event(_frame(seq, f"c{seq}"))
    await delivery.dead_letter(b"{", "not_json")
    for future in reversed(sink.futures):
        future.set_result(None)
    await delivery.drain()
    await _settle()
    assert delivery.progress.resume_point() == "K4"
    assert delivery.progress.unacknowledged == 0
    assert failures == []
