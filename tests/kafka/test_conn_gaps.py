"""Gap detection (``connectors/policy/gaps.py``): the pure rules, then both platforms against the
simulator's ``purge`` fault (retention by count, which no age rule can see) and the real broker.

The simulator's clock is injected and moved forward by hand, so "events emitted while the
connector was away" are minutes newer without any real wait.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from support.connector import SECRET, make_config, raw_has_everything, running, sim_stream, until

from ccstream import metrics
from ccstream.records import rfc3339
from ccstream.timefmt import parse_rfc3339 as parse_timestamp
from connectors.policy.gaps import GapWatch, age_gap, replay_gap
from connectors.policy.progress import CursorProgress, SinceProgress
from simulator import ClientSpec, Fault, SimSettings, Simulator

# -- pure ----------------------------------------------------------------------------------------


def test_replay_rule_needs_an_anchor_and_allows_the_disorder_tolerance() -> None:
    """A first event later than the anchor by more than the tolerance is a gap; at or before
    the anchor, within the tolerance, or with no anchor known, it is not."""
    assert replay_gap(100.0, 130.5, tolerance_s=30.0)
    assert not replay_gap(100.0, 130.0, tolerance_s=30.0)
    assert not replay_gap(100.0, 90.0, tolerance_s=0.0)
    assert not replay_gap(None, 1e9, tolerance_s=0.0)
    assert not replay_gap(100.0, None, tolerance_s=0.0)


def test_age_rule_compares_with_retention() -> None:
    """A resume point older than retention is a gap; one exactly as old is not."""
    assert age_gap(0.0, 86_400.5, 86_400.0)
    assert not age_gap(0.0, 86_400.0, 86_400.0)


def test_genesys_anchor_is_the_earliest_known_event_at_or_after_since() -> None:
    """The anchor is the earliest received event the inclusive replay must send again: a
    pending one when it is earlier than the newest acknowledged, else the newest acknowledged."""
    p = SinceProgress(None, lateness_s=10.0)
    a, b = p.track(100.0), p.track(105.0)
    p.ack(a)
    p.ack(b)
    assert p.resume_point() == rfc3339(95.0) and p.replay_anchor() == 105.0
    p.track(97.0)  # another correlation id, not acknowledged yet
    assert p.replay_anchor() == 97.0
    p.rewind()
    assert p.replay_anchor() is None  # forgotten: the next attempt keeps the earlier anchor


def test_nice_anchor_is_the_cursor_successor_when_it_was_received() -> None:
    """NICE: the first unacknowledged event (the cursor's successor) is the anchor; with
    everything acknowledged it is unknown."""
    p = CursorProgress("c0")
    a = p.track("c1", 100.0)
    p.ack(a)
    assert p.replay_anchor() is None
    p.track(None)  # a DLQ record has no timestamp
    p.track("c2", 101.0)
    assert p.replay_anchor() == 101.0


def test_gap_watch_reports_each_resume_point_once_and_keeps_the_anchor_across_attempts() -> None:
    """A refused attempt keeps the anchor for the same resume point; a replay starting past it
    is reported once; the age rule uses Genesys' own time or when a cursor was first seen."""
    watch = GapWatch("2024-01-01T00:00:00.000Z", 0.0, retention_s=100.0, tolerance_s=1.0,
                     since=parse_timestamp)
    assert watch.connecting("T1", 50.0, now=10.0) is None
    assert watch.connecting("T1", None, now=11.0) is None  # handshake refused, same point
    gap = watch.first_event(60.0)
    assert gap is not None and (gap.rule, gap.anchor, gap.first) == ("replay", 50.0, 60.0)
    assert watch.connecting("T1", 50.0, now=12.0) is None
    assert watch.first_event(60.0) is None  # already reported for this resume point
    old = rfc3339(1000.0)
    aged = GapWatch(None, 0.0, retention_s=100.0, tolerance_s=1.0, since=parse_timestamp)
    assert aged.connecting(old, None, now=1100.0) is None
    by_age = aged.connecting(old, None, now=1100.5)
    assert by_age is not None and (by_age.rule, by_age.age_s) == ("age", 100.5)
    assert aged.connecting(old, None, now=2000.0) is None  # reported once
    nice = GapWatch("K1", 0.0, retention_s=100.0, tolerance_s=1.0, since=None)
    assert nice.connecting("K1", None, now=50.0) is None
    seen_long_ago = nice.connecting("K1", None, now=100.5)
    assert seen_long_ago is not None and seen_long_ago.rule == "age"


# -- against the simulator and the real broker ---------------------------------------------------


class ShiftedClock:
    """The simulator's clock: real time plus a shift the test moves forward."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


def gaps(stream: str) -> float:
    return metrics.REGISTRY.get_sample_value("ccstream_gaps_total", {"stream": stream}) or 0.0


def gap_logs(caplog: pytest.LogCaptureFixture, stream: str) -> list[dict[str, Any]]:
    out = []
    for record in caplog.records:
        fields = getattr(record, "ccstream_fields", {})
        if record.getMessage() == "stream.gap" and fields.get("stream") == stream:
            out.append(fields)
    return out


@pytest.mark.kafka
@pytest.mark.parametrize("platform", ["genesys", "nice"])
async def test_purge_past_the_resume_point_is_reported_as_a_gap(
        platform: str, bootstrap: str, topic_prefix: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A reconnect whose replay starts past the anchor (the platform evicted it) is logged as
    ``stream.gap`` and counted once; a plain reconnect before it reports nothing."""
    caplog.set_level(logging.INFO)
    clock = ShiftedClock()
    name = f"gap-{platform}"
    settings = SimSettings(clients=(ClientSpec("acme", SECRET, platforms=(platform,)),),  # type: ignore[arg-type]
                           seed=9, rate=0.0, duplicate_rate=0.0, clock=clock)
    # NICE: the anchor is an event received but not yet acknowledged, so acknowledgements are
    # held back by a long linger (the session waits close_timeout_s, shorter, before rewinding)
    kafka_linger = 1500 if platform == "nice" else 2
    async with Simulator(settings) as sim:
        stats = sim.stats["acme"]
        config = make_config(bootstrap, topic_prefix, [sim_stream(sim, name, platform, "acme")],
                             close_timeout_s=0.3)
        config = config.model_copy(update={"kafka": config.kafka.model_copy(
            update={"linger_ms": kafka_linger})})
        base = gaps(name)
        async with running(config):
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 1, timeout=30)
            sim.emit(platform, "acme", 10)  # type: ignore[arg-type]
            await until(lambda: raw_has_everything(bootstrap, config, sim, platform, "acme"))
            # a plain reconnect: the replay starts at or before the anchor, no gap
            await _reconnect_after_pending(sim, platform, retry_after=0.1)
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 2, timeout=15)
            await until(lambda: raw_has_everything(bootstrap, config, sim, platform, "acme"))
            assert gaps(name) == base and not gap_logs(caplog, name)
            # the same, but while the connector waits out a 503 the platform evicts everything
            # it had not delivered, and two minutes of new events arrive
            await _reconnect_after_pending(sim, platform, retry_after=1.0)
            clock.shift += 120.0
            sim.inject(Fault(kind="purge", keep=0))
            sim.emit(platform, "acme", 10)  # type: ignore[arg-type]
            await sim.wait_for(lambda s: s.stats["acme"].handshakes_opened >= 3, timeout=15)
            await until(lambda: gaps(name) == base + 1)
            await until(lambda: raw_has_everything(bootstrap, config, sim, platform, "acme"))
        assert stats.gaps_served >= 1
        [logged] = gap_logs(caplog, name)
        assert logged["rule"] == "replay"
        first, anchor = parse_timestamp(logged["first"]), parse_timestamp(logged["anchor"])
        assert first is not None and anchor is not None and first - anchor > 100.0


async def _reconnect_after_pending(sim: Simulator, platform: str, retry_after: float) -> None:
    """Events the connector receives just before the platform closes (1012) and refuses the
    next handshake once with 503 Retry-After."""
    stats = sim.stats["acme"]
    rejected, sent = stats.handshake_rejections[503], stats.events_sent
    sim.inject(Fault(kind="handshake_error", client="acme", status=503, retry_after=retry_after))
    sim.emit(platform, "acme", 5)  # type: ignore[arg-type]
    await sim.wait_for(lambda s: s.stats["acme"].events_sent >= sent + 5, timeout=10)
    sim.inject(Fault(kind="mass_disconnect", code=1012))
    await sim.wait_for(lambda s: s.stats["acme"].handshake_rejections[503] > rejected, timeout=10)
