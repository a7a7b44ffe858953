"""Genesys Cloud CX flavour: ``since`` resumption (inclusive replay of ``timestamp >= T``).

``docs/protocols.md`` §2. Key fields: ``eventType``, ``correlationId`` and an
RFC 3339 ``timestamp`` (the resume point is computed from it, so an unreadable one is bad input).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ccstream.config import Platform
from ccstream.records import dedup_key
from ccstream.timefmt import parse_rfc3339 as parse_timestamp
from connectors.platforms import (
    Frame,
    bad,
    decode,
    event_frame,
    key_fields,
    stream_params,
    with_query,
)
from connectors.policy.progress import Progress, SinceProgress

KEYS = ("eventType", "correlationId", "timestamp")


class Genesys:
    name: Platform = "genesys"
    ping_interval_s = 12.0   # the platform drops a client silent for 15 s
    retention_s = 86_400.0   # assumption (not published): one day of replay
    resume_param = "since"

    @property
    def resume_epoch(self) -> Callable[[str], float | None]:
        return parse_timestamp

    def url(self, base: str, token: str, resume: str | None, types: Sequence[str]) -> str:
        return with_query(base, stream_params(token, "since", resume, types))

    def parse(self, raw: bytes, binary: bool, max_bytes: int) -> Frame:
        doc = decode(raw, binary, max_bytes)
        if isinstance(doc, Frame):
            return doc
        fields = key_fields(doc, KEYS)
        if isinstance(fields, str):
            return bad(raw, f"missing_{fields}")
        event_type, correlation_id, timestamp = fields
        epoch = parse_timestamp(timestamp)
        if epoch is None:
            return bad(raw, "bad_timestamp")
        return event_frame(raw, correlation_id, dedup_key(event_type, correlation_id, timestamp),
                           None, epoch)

    def progress(self, resume: str | None, lateness_s: float) -> Progress:
        floor = parse_timestamp(resume) if resume else None
        return SinceProgress(floor, lateness_s)
