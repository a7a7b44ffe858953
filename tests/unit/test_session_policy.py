"""The WebSocket session's own decisions (policy/session.py): pure, hand-made state."""

from __future__ import annotations

from connectors.policy.close_codes import Action
from connectors.policy.session import (
    ConnectionState,
    Ending,
    ending_disposition,
    token_disposition,
)


def test_the_most_telling_ending_wins_whatever_the_close_frame_says() -> None:
    """Shutdown before a dead connection before a Kafka failure, before the close frame."""
    state = ConnectionState()
    state.end(Ending.KAFKA_FAILED)
    assert ending_disposition(state, None, 1011, "").disposition.cause == "kafka_error"
    state.end(Ending.DEAD)
    assert ending_disposition(state, None, 1011, "").disposition.cause == "ping_timeout"
    state.end(Ending.SHUTDOWN)
    assert ending_disposition(state, None, 1011, "").disposition.action is Action.STOP
    assert state.ended(Ending.KAFKA_FAILED)  # every fact is kept, the most telling decides


def test_our_own_1009_means_a_frame_over_the_cap() -> None:
    """websockets sending 1009 marks the connection over the cap, whatever came back; without
    it the close frame is classified as received."""
    over = ending_disposition(ConnectionState(), 1009, 1000, "bye")
    assert over.over_cap
    plain = ending_disposition(ConnectionState(), None, 1008, "")
    assert not plain.over_cap and plain.disposition.auth


def test_token_failures_stop_with_a_fix_or_back_off() -> None:
    """invalid_client and an untrusted certificate stop the stream with their fix; a 429 backs
    off no sooner than its Retry-After."""
    bad = token_disposition("s", 401, "invalid_client", False, 0.0)
    assert bad.action is Action.FATAL and "check client_id" in (bad.detail or "")
    cert = token_disposition("s", None, "certificate_verify_failed", False, 0.0)
    assert "ca_file" in (cert.detail or "")
    busy = token_disposition("s", 429, "slow_down", True, 3.0)
    assert busy.action is Action.RECONNECT and busy.floor_s == 3.0
