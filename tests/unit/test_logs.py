"""Structured logs: stable event names, bound fields, secrets redacted before formatting."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from ccstream import logs


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture() -> io.StringIO:
    buffer = io.StringIO()
    logs.configure("DEBUG", "json", stream=buffer)
    return buffer


def test_json_lines_carry_event_and_bound_fields() -> None:
    """A bound logger writes one JSON object per line with its context and the event name."""
    buffer = _capture()
    log = logs.get_logger("ccstream.test").bind(stream="genesys-main")
    log.info("ws.connected", attempt=2)
    doc = orjson.loads(buffer.getvalue().splitlines()[-1])
    assert doc["event"] == "ws.connected"
    assert doc["stream"] == "genesys-main"
    assert doc["attempt"] == 2
    assert doc["level"] == "info"


def test_secrets_are_redacted_at_the_source() -> None:
    """Tokens in sensitive fields and in URL query strings never reach the output."""
    buffer = _capture()
    log = logs.get_logger("ccstream.test", client_secret="sh-secret")
    log.info("ws.connecting",
             url="wss://h/api/v2/analytics/events?access_token=eyJ.secret.sig&since=2024",
             refresh_token="rt-secret", access_token="eyJ.other")
    out = buffer.getvalue()
    for secret in ("sh-secret", "eyJ.secret.sig", "rt-secret", "eyJ.other"):
        assert secret not in out
    assert "since=2024" in out


def test_redact_url_keeps_everything_but_the_token() -> None:
    """redact_url replaces the token's value and leaves the other parameters."""
    url = "ws://127.0.0.1:1/api/v2/ws/events?access_token=abc&cursor=c1&types=a,b"
    cleaned = logs.redact_url(url)
    assert "abc" not in cleaned
    assert "cursor=c1" in cleaned
    assert "types=a,b" in cleaned


def test_library_lines_still_format() -> None:
    """Plain stdlib log records (from libraries) are rendered too."""
    buffer = _capture()
    logging.getLogger("someone.else").warning("plain %s", "message")
    doc = orjson.loads(buffer.getvalue().splitlines()[-1])
    assert doc["event"] == "plain message"
