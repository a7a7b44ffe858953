"""Platform adapters: everything that differs between Genesys and NICE, behind one ``Protocol``.

``docs/protocols.md`` §2. An adapter builds the stream URL afresh for every
attempt (token, resume point, types), turns a received frame into a ``Frame`` (event, heartbeat,
closing notice or bad input, never an exception), and says how far a stream has safely got
(``progress()``). A third platform is one new module here plus one test file.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ccstream.config import Platform
from connectors.policy.progress import Progress

HEARTBEAT = "system.heartbeat"
CLOSING = "system.socket_closing"


class FrameKind(enum.Enum):
    EVENT = "event"
    HEARTBEAT = "heartbeat"
    CLOSING = "closing"
    BAD = "bad"


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    raw: bytes
    binary: bool = False
    correlation_id: str = ""
    dedup_key: str = ""
    cursor: str | None = None     # NICE: the event's opaque cursor
    epoch: float | None = None    # Genesys: the event's timestamp, for the ``since`` watermark
    reason: str = ""              # BAD: why (the DLQ reason header)
    origin: str | None = None     # the real platforms' sources: "live" | "backfill"
    gap: str | None = None        # backfill records: the gap they fill, "from/to" (RFC 3339)

    @property
    def position(self) -> str | float | None:
        """What ``Progress`` folds into a resume point: the cursor (NICE) or the timestamp."""
        return self.cursor if self.cursor is not None else self.epoch


class PlatformAdapter(Protocol):
    name: Platform
    ping_interval_s: float        # the platform's window minus a margin (12 s / 25 s)
    retention_s: float            # how far back the platform can replay (gap detection)
    resume_param: str             # "since" | "cursor": the key of the cursor-topic value

    @property
    def resume_epoch(self) -> Callable[[str], float | None] | None:
        """Reads the instant a resume point stands for, when it is a time (Genesys' ``since``:
        gap ages are measured from it); None for an opaque cursor."""

    def url(self, base: str, token: str, resume: str | None, types: Sequence[str]) -> str: ...

    def parse(self, raw: bytes, binary: bool, max_bytes: int) -> Frame: ...

    def progress(self, resume: str | None, lateness_s: float) -> Progress: ...


def with_query(base: str, params: dict[str, str]) -> str:
    """``base`` with ``params`` set (replacing any of the same name already in the URL)."""
    parts = urlsplit(base)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query = urlencode([*kept, *params.items()], safe=":,")
    return urlunsplit(parts._replace(query=query))


def stream_params(token: str, resume_key: str, resume: str | None,
                  types: Sequence[str]) -> dict[str, str]:
    params = {"access_token": token}
    if resume is not None:
        params[resume_key] = resume
    if types:
        params["types"] = ",".join(types)
    return params


def event_frame(raw: bytes, correlation_id: str, dedup_key: str, cursor: str | None,
                epoch: float | None) -> Frame:
    """``Frame(FrameKind.EVENT, raw, correlation_id=..., dedup_key=..., cursor=..., epoch=...)``,
    built for the per-event path: a frozen dataclass's ``__init__`` sets each of its ten fields
    through ``object.__setattr__``; this sets the five an event has in one update of the
    instance dict (the others are the class's defaults). Equal to the constructor's frame."""
    frame = object.__new__(Frame)
    frame.__dict__.update(kind=FrameKind.EVENT, raw=raw, correlation_id=correlation_id,
                          dedup_key=dedup_key, cursor=cursor, epoch=epoch)
    return frame


def bad(raw: bytes, reason: str, binary: bool = False) -> Frame:
    return Frame(FrameKind.BAD, raw, binary=binary, reason=reason)


def decode(raw: bytes, binary: bool, max_bytes: int) -> dict[str, Any] | Frame:  # noqa: PLR0911
    """The frame's JSON object, or a BAD/HEARTBEAT/CLOSING ``Frame``.

    The checks every platform shares: text (a binary frame is bad input), size, UTF-8, JSON,
    object, the two system notices. Platform modules then check their own key fields.
    """
    if binary:
        return bad(raw, "binary_frame", binary=True)
    if len(raw) > max_bytes:
        return bad(raw, f"frame_too_large: {len(raw)} bytes > {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            raw.decode()
        except UnicodeDecodeError:
            return bad(raw, "invalid_utf8")
        return bad(raw, "not_json")
    if not isinstance(doc, dict):
        return bad(raw, "not_an_object")
    event_type = doc.get("eventType")
    if event_type == HEARTBEAT:
        return Frame(FrameKind.HEARTBEAT, raw)
    if event_type == CLOSING:
        return Frame(FrameKind.CLOSING, raw)
    return doc


def key_fields(doc: dict[str, Any], keys: Sequence[str]) -> list[str] | str:
    """The values of the key fields ``keys`` (all non-empty strings), or the name of the first
    one that is not (``missing_key``)."""
    values = [doc.get(key) for key in keys]
    for value in values:
        if value.__class__ is not str or not value:
            missing = missing_key(doc, keys)  # the rare path: say which, by the one rule
            if missing is not None:
                return missing
            break
    return values  # type: ignore[return-value]  # checked above: every one a non-empty str


def missing_key(doc: dict[str, Any], keys: Sequence[str]) -> str | None:
    """The first key field that is absent, empty or not a string (keys compare as strings)."""
    for key in keys:
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            return key
    return None


def adapter_for(platform: Platform) -> PlatformAdapter:
    from connectors.platforms.genesys import Genesys
    from connectors.platforms.nice import Nice

    return Genesys() if platform == "genesys" else Nice()
