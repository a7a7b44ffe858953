"""The frames the streaming side writes (s.5), pure: bytes in, bytes out.

Heartbeat, pong, closing notice, the channel-gone frame, and the ``frames`` fault's variants:
unknown topics, extra fields, a resent snapshot, reordering across topics, and the seed's
malformed variants (``ccaas-wire.md``), each one a frame that matches no row of s.5 (DLQ).
"""

from __future__ import annotations

from typing import Any

import orjson

HEARTBEAT = orjson.dumps({"topicName": "channel.metadata",
                          "eventBody": {"message": "WebSocket Heartbeat"}})
PONG = orjson.dumps({"topicName": "channel.metadata", "eventBody": {"message": "pong"}})
OVERSIZED_BYTES = 1_048_576 + 1024
MALFORMED = ("not_json", "not_object", "missing_field", "binary", "oversized", "invalid_utf8")


def is_ping(text: str) -> bool:
    """The client's health ping: the text ``{"message": "ping"}`` (s.5)."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and doc.get("message") == "ping"


def closing_notice(channel_id: str, correlation_id: str, org_id: str,
                   client_id: str) -> bytes:
    """``v2.system.socket_closing`` (real: SDK ``SystemMessageSystemMessage.md``)."""
    return orjson.dumps({"topicName": "v2.system.socket_closing", "version": "2", "eventBody": {
        "channelId": channel_id, "systemTopicType": "socket_closing",
        "correlationId": correlation_id, "organizationId": org_id, "userId": None,
        "oauthClientId": client_id, "reason": "maintenance",
        "message": "The WebSocket will be closed in about a minute", "data": {}}})


def not_found(channel_id: str) -> bytes:
    return orjson.dumps({"result": "404", "message": f"channel {channel_id} not found"})


def with_extra_fields(frame: bytes) -> bytes:
    """The same notification with fields a client must carry through untouched."""
    doc = orjson.loads(frame)
    doc["extraField"] = {"note": "unknown to the client", "n": 1}
    doc["metadata"]["ExtraMetadata"] = "x"
    return orjson.dumps(doc)


def unknown_topic(correlation_id: str, n: int) -> bytes:
    """An event (string topicName, object eventBody) on a topic nobody subscribed."""
    return orjson.dumps({"topicName": "v2.simulator.unknown.topic", "version": "2",
                         "eventBody": {"id": correlation_id, "n": n},
                         "metadata": {"CorrelationId": correlation_id}})


def malformed(variant: str) -> tuple[bytes, bool]:
    """The bytes of one frame matching no row of s.5, and whether it goes as a binary frame."""
    event: dict[str, Any] = {"topicName": "v2.simulator.malformed", "version": "2",
                             "eventBody": {"id": "malformed-0"},
                             "metadata": {"CorrelationId": "malformed-0"}}
    if variant == "not_json":
        return b'{"topicName": "v2.simulator.malformed", "eventBody": ', False
    if variant == "not_object":
        return orjson.dumps(["v2.simulator.malformed", {"id": "malformed-0"}]), False
    if variant == "missing_field":
        return orjson.dumps({k: v for k, v in event.items() if k != "eventBody"}), False
    if variant == "binary":
        return orjson.dumps(event), True
    if variant == "oversized":
        return orjson.dumps({**event, "eventBody": {"padding": "x" * OVERSIZED_BYTES}}), False
    # invalid_utf8: a text frame whose payload is not UTF-8 (RFC 6455 5.6 forbids it)
    return b'{"topicName": "v2.simulator.malformed", "eventBody": "\xff\xfe\xfd"}', False


def reorder(batch: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """No order across topics: topic groups in reverse order of first appearance, each topic's
    own frames still in order (s.10 ``frames``)."""
    groups: dict[str, list[tuple[str, bytes]]] = {}
    for item in batch:
        groups.setdefault(item[0], []).append(item)
    return [item for topic in reversed(list(groups)) for item in groups[topic]]
