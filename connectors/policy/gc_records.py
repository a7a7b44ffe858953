"""What a Genesys Cloud frame is, and the key and dedup key of every record. Pure.

Frames (genesys-cloud contract §5): one UTF-8 text JSON object each. A *notification* (an event)
has a string ``topicName`` other than ``channel.metadata`` and ``v2.system.*``, and an object
``eventBody``; it becomes a raw record with the frame's bytes as received. Heartbeats and pongs
(``channel.metadata``) prove the socket alive, ``v2.system.socket_closing`` starts a
make-before-break, ``{"result": "404"}`` says the channel is gone; other ``channel.metadata``,
``v2.system.*`` and ``{"result": ...}`` frames are logged and ignored. Anything else matches no
row and goes to the DLQ with a reason; the stream goes on.

Records (§8): key = ``eventBody.id`` if a non-empty string, else the first UUID in
``topicName``, else ``topicName``; eventType = ``topicName`` with each UUID segment replaced by
``{id}``; timestamp = ``eventBody.modifiedDate`` (presence), ``eventBody.routingStatus.startTime``
(routing status), else h(``eventBody``). Backfill records are keyed by ``conversationId`` /
``userId``, typed ``backfill.conversation`` / ``backfill.user``, timestamped h(record).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from ccstream.records import dedup_key

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
METADATA = "channel.metadata"
SYSTEM = "v2.system."
CLOSING = "v2.system.socket_closing"
HEARTBEAT_MESSAGE = "WebSocket Heartbeat"
PONG_MESSAGE = "pong"
# the health check's ping (§5, *modelled*): a text frame, not an RFC 6455 ping
PING = '{"message":"ping"}'

BACKFILL_KINDS = {
    # kind: (path, list in the answer, id field, eventType)
    "conversations": ("/api/v2/analytics/conversations/details/query", "conversations",
                      "conversationId", "backfill.conversation"),
    "users": ("/api/v2/analytics/users/details/query", "userDetails", "userId",
              "backfill.user"),
}


class Kind(enum.Enum):
    EVENT = "event"
    HEARTBEAT = "heartbeat"
    PONG = "pong"
    CLOSING = "closing"       # v2.system.socket_closing
    GONE = "gone"             # {"result": "404", ...}
    IGNORED = "ignored"       # other channel.metadata, v2.system.*, {"result": ...}
    BAD = "bad"               # matches no row: the DLQ


@dataclass(frozen=True)
class Classified:
    kind: Kind
    reason: str = ""          # BAD: the DLQ reason; IGNORED: what was ignored
    correlation_id: str = ""
    dedup_key: str = ""


def h(value: Any) -> str:
    """h(x) of §8: the first 16 hex characters of sha256 of Python's canonical JSON of x."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate escaped in the JSON: hash it, do not crash
        data = text.encode("utf-8", errors="surrogatepass")
    return hashlib.sha256(data).hexdigest()[:16]


def event_type(topic: str) -> str:
    """``v2.routing.queues.{id}.conversations``: each dot-separated UUID segment is ``{id}``."""
    return ".".join("{id}" if UUID.fullmatch(part) else part for part in topic.split("."))


def correlation_id(topic: str, body: dict[str, Any]) -> str:
    entity = body.get("id")
    if isinstance(entity, str) and entity:
        return entity
    found = UUID.search(topic)
    return found.group(0) if found else topic


def _user_event(topic: str) -> str | None:
    """``presence`` / ``routingStatus`` for ``v2.users.*.presence|routingStatus``, else None."""
    parts = topic.split(".")
    if len(parts) == 4 and parts[:2] == ["v2", "users"]:
        return parts[3]
    return None


def timestamp(topic: str, body: dict[str, Any]) -> str:
    event = _user_event(topic)
    value: Any = None
    if event == "presence":
        value = body.get("modifiedDate")
    elif event == "routingStatus":
        status = body.get("routingStatus")
        value = status.get("startTime") if isinstance(status, dict) else None
    return value if isinstance(value, str) else h(body)


def notification(topic: str, body: dict[str, Any]) -> Classified:
    key = correlation_id(topic, body)
    return Classified(Kind.EVENT, correlation_id=key,
                      dedup_key=dedup_key(event_type(topic), key, timestamp(topic, body)))


def _decode(raw: bytes, binary: bool, max_bytes: int) -> Any:
    """The frame's JSON value, or a BAD ``Classified`` (the checks every flavour shares)."""
    if binary:
        return Classified(Kind.BAD, "binary_frame")
    if len(raw) > max_bytes:
        return Classified(Kind.BAD, f"frame_too_large: {len(raw)} bytes > {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Classified(Kind.BAD, "invalid_utf8")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return Classified(Kind.BAD, "not_json")


def classify(raw: bytes, binary: bool, max_bytes: int) -> Classified:  # noqa: PLR0911 (a table)
    """Which row of §5 a frame matches (BAD: none)."""
    doc = _decode(raw, binary, max_bytes)
    if isinstance(doc, Classified):
        return doc
    if not isinstance(doc, dict):
        return Classified(Kind.BAD, "not_an_object")
    topic, body = doc.get("topicName"), doc.get("eventBody")
    if topic == METADATA:
        message = body.get("message") if isinstance(body, dict) else None
        if message == HEARTBEAT_MESSAGE:
            return Classified(Kind.HEARTBEAT)
        if message == PONG_MESSAGE:
            return Classified(Kind.PONG)
        return Classified(Kind.IGNORED, METADATA)
    if isinstance(topic, str) and topic.startswith(SYSTEM):
        return Classified(Kind.CLOSING) if topic == CLOSING else Classified(Kind.IGNORED, topic)
    if not isinstance(topic, str) and "result" in doc:
        if str(doc["result"]) == "404":
            return Classified(Kind.GONE)
        return Classified(Kind.IGNORED, f"result {str(doc['result'])[:20]}")
    if not isinstance(topic, str):
        return Classified(Kind.BAD, "not_an_event: no string topicName")
    if not isinstance(body, dict):
        return Classified(Kind.BAD, "not_an_event: eventBody is not an object")
    return notification(topic, body)


def backfill_record(kind: str, item: Any) -> Classified:
    """One analytics item as a record (§7, §8); BAD (the DLQ) when it has no id."""
    _, _, id_field, typed = BACKFILL_KINDS[kind]
    if not isinstance(item, dict):
        return Classified(Kind.BAD, f"backfill_not_an_object: a {kind} item")
    key = item.get(id_field)
    if not isinstance(key, str) or not key:
        return Classified(Kind.BAD, f"backfill_without_id: a {kind} item has no {id_field}")
    return Classified(Kind.EVENT, correlation_id=key, dedup_key=dedup_key(typed, key, h(item)))
