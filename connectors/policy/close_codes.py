"""What a close, a handshake answer or a dropped connection means: a pure classifier.

Every row of the "Closing" and "Handshake answers" tables of ``docs/protocols.md``
maps to one ``Disposition``: what the session does next (``Action``), why (``cause``, the label of
the reconnect metric and of ``ws.reconnect_scheduled``), and the earliest retry (``floor_s``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import orjson


class Action(enum.Enum):
    RECONNECT = "reconnect"          # back off, reconnect with the same token if still valid
    REFRESH = "refresh"              # auth problem: new token first, then reconnect
    FATAL = "fatal"                  # not retriable: stop this stream, clear error
    PLANNED = "planned"              # the session itself chose to reconnect (closing notice)
    STOP = "stop"                    # shutdown requested


@dataclass(frozen=True)
class Disposition:
    action: Action
    cause: str
    floor_s: float = 0.0
    detail: str = ""

    @property
    def auth(self) -> bool:
        return self.action is Action.REFRESH


AUTH_ERRORS = frozenset({"token_expired", "unauthorized"})


def _reason_json(reason: str) -> dict[str, object]:
    try:
        doc = orjson.loads(reason) if reason else None
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def retry_after_seconds(value: object) -> float:
    """A ``Retry-After``/``retry_after`` value in seconds; unreadable or negative values are 0."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return seconds if seconds > 0 else 0.0


def classify_close(code: int | None, reason: str) -> Disposition:  # noqa: PLR0911 (a table)
    """A close frame received from the server (``code`` None: the connection ended without one)."""
    if code is None:
        # no close frame: TCP reset, NAT timeout, partition, missed pings
        return Disposition(Action.RECONNECT, "dropped")
    doc = _reason_json(reason)
    if code == 1000 and doc.get("error") in AUTH_ERRORS:
        return Disposition(Action.REFRESH, "auth_close", detail=str(doc.get("error")))
    if code == 1008:
        # policy violation: token expired or invalid; reusing it is the infinite-401 loop
        return Disposition(Action.REFRESH, "auth_close", detail="1008")
    if code == 1013:
        return Disposition(Action.RECONNECT, "try_again_later",
                           retry_after_seconds(doc.get("retry_after")))
    if code in (1000, 1001):
        return Disposition(Action.RECONNECT, "server_closed", detail=str(code))
    if code in (1011, 1012, 1014):
        return Disposition(Action.RECONNECT, "server_error", detail=str(code))
    if code == 1009:
        return Disposition(Action.RECONNECT, "frame_too_big")
    # anything else (1002, 1003, 1007, 4xxx...): the stream must run forever, so reconnect
    return Disposition(Action.RECONNECT, "server_closed", detail=str(code))


def classify_handshake(status: int, headers: Mapping[str, str]) -> Disposition:
    """An HTTP answer other than 101 to the upgrade request."""
    retry_after = retry_after_seconds(headers.get("Retry-After") or headers.get("retry-after"))
    if status == 401:
        return Disposition(Action.REFRESH, "handshake_401")
    if status == 403:
        return Disposition(Action.FATAL, "forbidden",
                           detail="403 Forbidden: the client lacks the permission for this stream")
    if status == 429:
        return Disposition(Action.RECONNECT, "rate_limited", retry_after)
    if status == 503:
        return Disposition(Action.RECONNECT, "unavailable", retry_after)
    return Disposition(Action.RECONNECT, f"handshake_{status}", retry_after)


def pong_timeout() -> Disposition:
    return Disposition(Action.RECONNECT, "ping_timeout")


def connect_error() -> Disposition:
    return Disposition(Action.RECONNECT, "connect_error")


def kafka_error() -> Disposition:
    """Kafka could not take what the stream received: reconnect, the platform replays it."""
    return Disposition(Action.RECONNECT, "kafka_error")


def closing_notice() -> Disposition:
    return Disposition(Action.PLANNED, "closing_notice")


def stop() -> Disposition:
    return Disposition(Action.STOP, "shutdown")
