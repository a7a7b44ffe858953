"""Which dedup key a raw record has, or why it has none (pure).

The connector puts the key in the ``ccstream-dedup-key`` header (``eventType|correlationId|
timestamp``, docs/kafka.md); a raw record written by anyone else may lack
it, so the key is then rebuilt from the event frame (docs/protocols.md, "The dedup
key of an event is (eventType, correlationId, timestamp), compared as strings"). A record with
neither is bad input: it goes to the DLQ with the reason, and the stream goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from ccstream.records import H_DEDUP_KEY, Headers, dedup_key, header

# a dedup key is three short strings; anything longer is not an event's key
MAX_KEY_BYTES = 4096
REASON_NOT_JSON = "value_not_json"
REASON_NOT_OBJECT = "value_not_object"
REASON_MISSING_FIELD = "missing_key_field"
REASON_KEY_TOO_LONG = "dedup_key_too_long"


@dataclass(frozen=True)
class Unkeyable:
    """A record without a usable dedup key; ``reason`` goes into the DLQ header."""

    reason: str


def key_of(headers: Headers | None, value: bytes | None) -> bytes | Unkeyable:
    """The record's dedup key as UTF-8 bytes, or why it cannot have one."""
    key = header(headers, H_DEDUP_KEY)
    if key is None:
        found = _from_frame(value or b"")
        if isinstance(found, Unkeyable):
            return found
        key = found
    if not key or len(key) > MAX_KEY_BYTES:
        return Unkeyable(REASON_KEY_TOO_LONG if key else REASON_MISSING_FIELD)
    return key


def _from_frame(value: bytes) -> bytes | Unkeyable:
    try:
        frame = orjson.loads(value)
    except orjson.JSONDecodeError:
        return Unkeyable(REASON_NOT_JSON)
    if not isinstance(frame, dict):
        return Unkeyable(REASON_NOT_OBJECT)
    parts = [frame.get(name) for name in ("eventType", "correlationId", "timestamp")]
    if not all(isinstance(part, str) and part for part in parts):
        return Unkeyable(REASON_MISSING_FIELD)
    return dedup_key(*(str(part) for part in parts)).encode()
