"""Platform adapters: URLs built per attempt, frames classified, never an exception (pure)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson
from hypothesis import given, settings
from support.frames import frames

from ccstream.records import dlq_value
from connectors.platforms import FrameKind, adapter_for
from connectors.platforms.genesys import Genesys
from connectors.platforms.nice import Nice

LIMIT = 4096


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_genesys_url_carries_token_since_and_types() -> None:
    """The Genesys URL has access_token, since and comma-separated types, replacing stale ones."""
    url = Genesys().url("wss://h/api/v2/analytics/events?access_token=old&x=1", "T1",
                        "2024-01-15T10:30:00.000Z", ["a.b", "c"])
    assert query(url) == {"x": ["1"], "access_token": ["T1"],
                          "since": ["2024-01-15T10:30:00.000Z"], "types": ["a.b,c"]}


def test_nice_url_carries_cursor_and_no_resume_when_none() -> None:
    """NICE resumes with cursor=; without a resume point the parameter is absent."""
    assert query(Nice().url("ws://h/api/v2/ws/events", "T", "abc==", []))["cursor"] == ["abc=="]
    assert "cursor" not in query(Nice().url("ws://h/api/v2/ws/events", "T", None, []))


def test_ping_intervals_are_the_platform_rules() -> None:
    """12 s for Genesys, 25 s for NICE."""
    assert (adapter_for("genesys").ping_interval_s, adapter_for("nice").ping_interval_s) == (12, 25)


def test_genesys_event_is_parsed_with_dedup_key_and_epoch() -> None:
    """A Genesys event yields its key, the contract's dedup key and its timestamp in seconds."""
    raw = orjson.dumps({"eventType": "interaction.routed", "correlationId": "c-1",
                        "timestamp": "2024-01-15T10:30:00.250Z", "eventBody": {}})
    frame = Genesys().parse(raw, False, LIMIT)
    assert frame.kind is FrameKind.EVENT and frame.raw == raw
    assert frame.dedup_key == "interaction.routed|c-1|2024-01-15T10:30:00.250Z"
    assert frame.epoch == 1705314600.25


def test_nice_event_needs_a_cursor() -> None:
    """A NICE event carries its cursor; without one it is bad input."""
    doc = {"eventId": "e", "eventType": "screenpop", "correlationId": "c",
           "timestamp": "2024-01-15T10:30:00.000Z", "cursor": "K1", "data": {}}
    assert Nice().parse(orjson.dumps(doc), False, LIMIT).cursor == "K1"
    del doc["cursor"]
    bad = Nice().parse(orjson.dumps(doc), False, LIMIT)
    assert (bad.kind, bad.reason) == (FrameKind.BAD, "missing_cursor")


def test_system_notices_are_not_events() -> None:
    """Heartbeats and socket-closing notices are recognised on both platforms."""
    for adapter in (Genesys(), Nice()):
        hb = orjson.dumps({"eventType": "system.heartbeat", "timestamp": "x"})
        closing = orjson.dumps({"eventType": "system.socket_closing", "timestamp": "x"})
        assert adapter.parse(hb, False, LIMIT).kind is FrameKind.HEARTBEAT
        assert adapter.parse(closing, False, LIMIT).kind is FrameKind.CLOSING


def test_each_kind_of_bad_input_has_its_reason() -> None:
    """Binary, oversized, invalid UTF-8, non-JSON, non-object, missing key, bad timestamp."""
    g = Genesys()
    cases = {
        "binary_frame": (b"\x00\x01", True),
        "frame_too_large": (b"x" * (LIMIT + 1), False),
        "invalid_utf8": (b'{"a": "\xff"}', False),
        "not_json": (b"{nope", False),
        "not_an_object": (b"[1, 2]", False),
        "missing_correlationId": (b'{"eventType": "a", "timestamp": "t"}', False),
        "bad_timestamp": (b'{"eventType": "a", "correlationId": "c", "timestamp": "t"}', False),
    }
    for reason, (raw, binary) in cases.items():
        frame = g.parse(raw, binary, LIMIT)
        assert frame.kind is FrameKind.BAD and frame.reason.startswith(reason), reason


def test_dlq_value_is_text_or_base64() -> None:
    """DLQ values keep UTF-8 text as is and base64-encode binary or invalid UTF-8 bytes."""
    assert dlq_value(b"{nope", "not_json", False) == (b"{nope", "utf-8", "not_json")
    assert dlq_value(b"\xff", "invalid_utf8", False)[1:] == ("base64", "invalid_utf8")
    assert dlq_value(b"\x00", "binary_frame", True)[0] == b"AA=="


@settings(max_examples=400, deadline=None)
@given(frames)
def test_parse_never_raises_and_refuses_with_a_reason(frame: tuple[bytes, bool]) -> None:
    """Whatever the bytes, parsing returns a Frame; a BAD frame always says why."""
    raw, binary = frame
    for adapter in (Genesys(), Nice()):
        parsed = adapter.parse(raw, binary, 150)
        assert parsed.raw == raw
        if parsed.kind is FrameKind.BAD:
            assert parsed.reason
        if parsed.kind is FrameKind.EVENT:
            assert parsed.dedup_key.count("|") >= 2 and parsed.correlation_id
