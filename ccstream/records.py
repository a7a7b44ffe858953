"""What ccstream writes to Kafka, per ``../shared/contracts/kafka-and-cli.md`` (topics table).

Shared by the connector (which writes raw, DLQ and cursor records) and the dedup pipeline (which
reads raw and writes clean): the header names and the dedup key are defined here only.
"""

from __future__ import annotations

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
