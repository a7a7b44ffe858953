"""What ccstream writes to Kafka, per ``docs/kafka.md`` (topics table).

Shared by the connector (which writes raw, DLQ and cursor records) and the dedup pipeline (which
reads raw and writes clean): the header names and the dedup key are defined here only.
"""

from __future__ import annotations

import base64

from ccstream.timefmt import rfc3339

__all__ = ["rfc3339"]  # re-exported: records and their headers use it

H_STREAM = "ccstream-stream"
H_PLATFORM = "ccstream-platform"
H_DEDUP_KEY = "ccstream-dedup-key"
H_RECEIVED_AT = "ccstream-received-at"
H_CURSOR = "ccstream-cursor"
# the real platforms' sources: where a record came from ("live" | "backfill") and, on backfill
# records, the gap it fills ("from/to", RFC 3339)
H_SOURCE = "ccstream-source"
H_GAP = "ccstream-gap"
# DLQ records: why the frame was refused, and whether the value was base64-encoded
H_DLQ_REASON = "ccstream-dlq-reason"
H_DLQ_ENCODING = "ccstream-dlq-encoding"

Headers = list[tuple[str, bytes]]


def dedup_key(event_type: str, correlation_id: str, timestamp: str) -> str:
    """The contract's dedup key ``eventType|correlationId|timestamp`` (compared as strings)."""
    return f"{event_type}|{correlation_id}|{timestamp}"


def header(headers: Headers | None, name: str) -> bytes | None:
    """The first value of header ``name``, or None."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


# a DLQ record must fit in a Kafka request (1 MiB by default): longer frames are cut, and the
# reason says so (the frame's head is what an operator needs to see what was sent)
DLQ_MAX_VALUE_BYTES = 512 * 1024


def dlq_value(raw: bytes, reason: str, binary: bool) -> tuple[bytes, str, str]:
    """The DLQ value, its encoding (``utf-8`` or ``base64``) and the reason, cut if too long."""
    if len(raw) > DLQ_MAX_VALUE_BYTES:
        reason = f"{reason}; value cut to the first {DLQ_MAX_VALUE_BYTES} of {len(raw)} bytes"
        raw = raw[:DLQ_MAX_VALUE_BYTES]
    if not binary:
        try:
            raw.decode()
        except UnicodeDecodeError:
            binary = True
    if binary:
        return base64.b64encode(raw), "base64", reason
    return raw, "utf-8", reason
