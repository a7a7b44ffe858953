"""The probes' verdicts (ccstream/probes.py), pure, and the loop-lag watchdog on a real loop."""

from __future__ import annotations

import asyncio
import time

from ccstream.config import MetricsSettings
from ccstream.probes import Probes, loop_healthy, readiness


def test_ready_needs_kafka_and_every_stream_streaming_or_declared() -> None:
    """Streaming and maintenance are ready; anything else, or Kafka down, is a named reason."""
    ok = readiness({"a": "streaming", "b": "maintenance"}, {}, None, 10.0, 0.0)
    assert ok.ok and ok.reasons == ()
    down = readiness({"a": "streaming"}, {}, "127.0.0.1:9092 unreachable (X)", 10.0, 0.0)
    assert not down.ok and down.reasons == ("kafka: 127.0.0.1:9092 unreachable (X)",)
    waiting = readiness({"a": "waiting", "b": "failed"}, {}, None, 10.0, 0.0)
    assert waiting.reasons == ("stream a: waiting", "stream b: failed")


def test_a_short_reconnect_keeps_the_process_ready_a_breaker_does_not() -> None:
    """Within ``ready_grace_s`` of streaming a reconnecting stream counts; an open breaker or a
    failure never does."""
    seen = {"a": 9.0, "b": 9.0}
    assert readiness({"a": "waiting", "b": "connecting"}, seen, None, 10.0, 5.0).ok
    assert not readiness({"a": "waiting"}, seen, None, 20.0, 5.0).ok
    assert not readiness({"a": "open"}, seen, None, 10.0, 5.0).ok
    assert not readiness({"a": "failed"}, seen, None, 10.0, 5.0).ok


def test_no_stream_is_not_ready_unless_allowed() -> None:
    """Before the streams exist the process is not ready (cluster mode may allow it)."""
    assert readiness({}, {}, None, 0.0, 0.0).reasons == ("no stream is running yet",)
    assert readiness({}, {}, None, 0.0, 0.0, allow_empty=True).ok


def test_loop_health_is_the_watchdog_lag_against_its_bound() -> None:
    assert loop_healthy(0.01, 1.0).ok
    assert not loop_healthy(1.5, 1.0).ok


async def test_the_watchdog_sees_a_blocked_loop() -> None:
    """A blocking call longer than ``max_loop_lag_s`` makes ``/healthz`` unhealthy, and the
    next ticks healthy again."""
    async def reachable() -> str | None:
        return None

    probes = Probes(MetricsSettings(max_loop_lag_s=0.1), lambda: {"a": "streaming"}, reachable)
    watch = asyncio.create_task(probes._watch())
    try:
        await asyncio.sleep(0.03)
        time.sleep(0.3)  # the point: the loop is blocked
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        assert not probes.health().ok and probes.lag_s > 0.1
        for _ in range(100):  # healthy again within a few ticks
            await asyncio.sleep(0.02)
            if probes.health().ok:
                break
        assert probes.health().ok
    finally:
        watch.cancel()
