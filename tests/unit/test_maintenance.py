"""Maintenance windows (connectors/policy/maintenance.py and ``[[maintenance]]``), pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from ccstream.config import ConfigError, MaintenanceWindow, parse
from connectors.policy.lifecycle import TRANSITIONS, SourceStatus
from connectors.policy.maintenance import Calendar, Open, probe_delay, span

STREAM = {"name": "g", "platform": "genesys", "url": "wss://a.test/x",
          "token_url": "https://login.test/t", "client_id": "c", "client_secret": "s"}


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def _window(**kw: Any) -> MaintenanceWindow:
    return parse({"streams": [STREAM], "maintenance": [{"platform": "genesys", **kw}]},
                 environ={}).maintenance[0]


def test_a_one_off_window_is_open_from_start_to_end() -> None:
    """start <= now < end, in UTC; a naive datetime is read as UTC."""
    window = _window(start=datetime(2025, 6, 1, 2, 0), end="2025-06-01T04:00:00Z")
    assert span(window, _epoch(2025, 6, 1, 1, 59)) is None
    assert span(window, _epoch(2025, 6, 1, 2, 0)) == (_epoch(2025, 6, 1, 2), _epoch(2025, 6, 1, 4))
    assert span(window, _epoch(2025, 6, 1, 4, 0)) is None


def test_a_weekly_window_opens_every_week_on_its_day() -> None:
    """``day = "sun", from = "02:00", to = "04:00"``: every Sunday 02:00-04:00 UTC only."""
    window = _window(day="sun", **{"from": "02:00"}, to="04:00")
    sunday = (2025, 6, 1)  # a Sunday
    assert datetime(*sunday, tzinfo=UTC).strftime("%a") == "Sun"
    assert span(window, _epoch(*sunday, 3, 0)) == (_epoch(*sunday, 2), _epoch(*sunday, 4))
    assert span(window, _epoch(2025, 6, 8, 2, 30)) is not None  # a week later
    assert span(window, _epoch(2025, 6, 2, 3, 0)) is None      # Monday
    assert span(window, _epoch(*sunday, 4, 0)) is None


def test_the_calendar_picks_the_window_that_ends_last() -> None:
    """Overlapping windows: the wait lasts until the later end."""
    short = _window(start="2025-06-01T02:00:00Z", end="2025-06-01T03:00:00Z")
    long = _window(start="2025-06-01T02:30:00Z", end="2025-06-01T05:00:00Z",
                   probe_interval_s=60)
    found = Calendar([short, long]).open_at(_epoch(2025, 6, 1, 2, 45))
    assert found == Open(_epoch(2025, 6, 1, 5), 60.0)
    assert Calendar([short]).open_at(_epoch(2025, 6, 1, 6)) is None
    assert Calendar([]).open_at(0.0) is None


def test_probes_are_jittered_and_the_return_after_the_window_is_spread() -> None:
    """interval x (0.5 + r) inside; never later than end + r x interval / 2."""
    window = Open(end=10_000.0, probe_interval_s=300.0)
    assert probe_delay(window, 0.0, lambda: 0.0) == 150.0
    assert probe_delay(window, 0.0, lambda: 1.0) == 450.0
    near_end = probe_delay(window, 9_900.0, lambda: 0.8)
    assert near_end == pytest.approx(100.0 + 0.8 * 150.0)
    assert probe_delay(window, 9_900.0, lambda: 0.2) == pytest.approx(100.0 + 0.2 * 150.0)


def test_maintenance_is_a_lifecycle_state_a_stream_leaves_by_connecting() -> None:
    """A dropped stream enters MAINTENANCE and leaves it by an attempt (or a stop)."""
    into = {s for s, nxt in TRANSITIONS.items() if SourceStatus.MAINTENANCE in nxt}
    assert into == {SourceStatus.CONNECTING, SourceStatus.STREAMING, SourceStatus.WAITING}
    assert TRANSITIONS[SourceStatus.MAINTENANCE] == {
        SourceStatus.CONNECTING, SourceStatus.STREAMING, SourceStatus.STOPPED, SourceStatus.FAILED}


@pytest.mark.parametrize(("window", "key"), [
    ({"platform": "genesys", "start": "2025-06-01T04:00:00Z", "end": "2025-06-01T02:00:00Z"},
     "maintenance[0].end"),
    ({"platform": "genesys", "day": "sun", "from": "04:00", "to": "02:00"}, "maintenance[0].to"),
    ({"platform": "genesys", "day": "sun", "from": "02:00"}, "maintenance[0].to"),
    ({"platform": "genesys", "day": "sunday", "from": "02:00", "to": "04:00"},
     "maintenance[0].day"),
    ({"platform": "genesys", "day": "sun", "from": "2am", "to": "04:00"}, "maintenance[0].from"),
    ({"day": "sun", "from": "02:00", "to": "04:00"}, "maintenance[0].platform"),
    ({"streams": ["nope"], "day": "sun", "from": "02:00", "to": "04:00"},
     "maintenance[0].streams"),
    ({"platform": "genesys"}, "maintenance[0].start"),
])
def test_bad_windows_are_refused_with_the_key_path(window: dict[str, Any], key: str) -> None:
    """A window that ends before it starts, or is incomplete, names its key."""
    with pytest.raises(ConfigError) as err:
        parse({"streams": [STREAM], "maintenance": [window]}, environ={})
    assert err.value.key == key, err.value


def test_windows_cover_a_platform_or_named_streams() -> None:
    """``maintenance_for`` gives a stream the windows of its platform and those naming it."""
    other = {**STREAM, "name": "n", "platform": "nice"}
    cfg = parse({"streams": [STREAM, other], "maintenance": [
        {"platform": "nice", "day": "mon", "from": "01:00", "to": "02:00"},
        {"streams": ["g"], "day": "tue", "from": "01:00", "to": "02:00"}]}, environ={})
    assert [w.day for w in cfg.maintenance_for(cfg.streams[0])] == ["tue"]
    assert [w.day for w in cfg.maintenance_for(cfg.streams[1])] == ["mon"]
