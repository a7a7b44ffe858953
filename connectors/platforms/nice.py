"""NICE CXone flavour: opaque ``cursor`` resumption (replay after C, possibly some at or before).

``docs/protocols.md`` §2. Key fields: ``eventType``, ``correlationId``,
``timestamp`` (the dedup key) and ``cursor`` (the resume point). ``eventId`` is not required:
the contract's dedup key does not use it.
"""

from __future__ import annotations

from collections.abc import Sequence

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
from connectors.policy.progress import CursorProgress, Progress

KEYS = ("eventType", "correlationId", "timestamp", "cursor")


class Nice:
    name: Platform = "nice"
    ping_interval_s = 25.0   # the platform drops a client silent for 30 s
    retention_s = 86_400.0   # assumption (not published): one day of replay
    resume_param = "cursor"

    @property
    def resume_epoch(self) -> None:
        return None  # an opaque cursor stands for no instant

    def url(self, base: str, token: str, resume: str | None, types: Sequence[str]) -> str:
        return with_query(base, stream_params(token, "cursor", resume, types))

    def parse(self, raw: bytes, binary: bool, max_bytes: int) -> Frame:
        doc = decode(raw, binary, max_bytes)
        if isinstance(doc, Frame):
            return doc
        fields = key_fields(doc, KEYS)
        if isinstance(fields, str):
            return bad(raw, f"missing_{fields}")
        event_type, correlation_id, timestamp, cursor = fields
        return event_frame(
            raw, correlation_id, dedup_key(event_type, correlation_id, timestamp), cursor,
            # only for gap detection (connectors/policy/gaps.py): the cursor is the resume point, so
            # an unreadable timestamp is not bad input here
            parse_timestamp(timestamp),
        )

    def progress(self, resume: str | None, lateness_s: float) -> Progress:
        del lateness_s  # cursors are exact: the server replays everything after C
        return CursorProgress(resume)
