"""The lease at a source's doors (``connectors.cluster.guard``): sends and reconnects refused
once it expired, with the supervisor told at once; a refused send is a Kafka failure to the
source's delivery, so its resume point never moves over it (no broker, no network)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from support.memory_sink import MemorySink

from ccstream.config import StreamConfig
from ccstream.logs import get_logger
from connectors.cluster.guard import HOLD_S, GuardedLimiter, GuardedSink, LeaseExpiredError
from connectors.kafka.delivery import Delivery
from connectors.platforms import adapter_for
from connectors.policy.ratelimit import TokenBucket


class Gate:
    def __init__(self) -> None:
        self.open = True
        self.denied = 0

    def allowed(self) -> bool:
        return self.open

    def deny(self) -> None:
        self.denied += 1


def _frame(seq: int):  # type: ignore[no-untyped-def]
    raw = orjson.dumps({"eventId": f"e{seq}", "eventType": "screenpop",
                        "correlationId": f"c{seq}", "timestamp": "2024-01-15T10:30:00.000Z",
                        "cursor": f"K{seq}", "data": {}})
    return adapter_for("nice").parse(raw, False, 4096)


async def test_sends_pass_while_the_lease_holds_and_are_refused_after() -> None:
    """A guarded sink forwards while allowed; then refuses with a KafkaError and reports."""
    gate, inner = Gate(), MemorySink()
    sink = GuardedSink(inner, gate.allowed, gate.deny)
    await (await sink.send_event("n", "nice", _frame(1), 0.0))
    gate.open = False
    with pytest.raises(LeaseExpiredError):
        await sink.send_event("n", "nice", _frame(2), 0.0)
    with pytest.raises(LeaseExpiredError):
        await sink.send_dlq("n", "nice", b"x", "bad", received_at=0.0)
    assert len(inner.sent) == 1
    assert gate.denied == 2
    assert sink.raw_limit == inner.raw_limit


async def test_a_refused_send_never_moves_the_resume_point() -> None:
    """Delivery treats the refusal as a Kafka failure: the cursor stays on the last
    acknowledged event and the source is told to stop reading."""
    gate, inner = Gate(), MemorySink()
    stream = StreamConfig(name="n", platform="nice", url="ws://127.0.0.1/x",
                          token_url="http://127.0.0.1/t", client_id="c", client_secret="s")
    progress = adapter_for("nice").progress(None, 0.0)
    failures: list[int] = []
    delivery = Delivery(stream, GuardedSink(inner, gate.allowed, gate.deny), progress,
                        lambda: 0.0, log=get_logger("test"),
                        on_failure=lambda: failures.append(1))
    await delivery.event(_frame(1))
    await asyncio.sleep(0)  # the acknowledgement's callback
    assert progress.resume_point() == "K1"
    gate.open = False
    await delivery.event(_frame(2))
    await delivery.event(_frame(3))
    await asyncio.sleep(0)
    assert progress.resume_point() == "K1"
    assert failures and gate.denied == 2


def test_reconnects_wait_out_an_expired_lease() -> None:
    """A guarded bucket answers "wait an hour" (the slot stops the source long before) and
    takes no token from the shared bucket meanwhile."""
    gate = Gate()
    bucket = TokenBucket(1.0, 1, 0.0)
    limiter = GuardedLimiter(bucket, gate.allowed, gate.deny)
    gate.open = False
    assert limiter.reserve(0.0) == HOLD_S
    assert bucket.available(0.0) == 1.0
    gate.open = True
    assert limiter.reserve(0.0) == 0.0
    assert limiter.available(0.0) == 0.0
    assert gate.denied == 1
