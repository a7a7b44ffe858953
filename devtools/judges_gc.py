"""The judge of a Genesys Cloud stream: ``genesys-cloud.md`` s.11 "The judge's view". Pure.

Input: the Genesys Cloud simulator's ledger JSON (``/_sim/ledger``, or ``GcLedger.to_json()``:
per OAuth client every notification written on a socket with its sha256, the server-view
uncovered intervals, the conversation and user activity; epoch seconds of the simulator's
clock), the raw and clean records, the reported gaps.

**Lost** (each must be none):

1. A notification the server wrote on an open socket for a topic ``Permitted`` on that
   channel (the ledger lists exactly those), written outside every reported gap, whose bytes
   are no raw record's value (sha256 of the bytes).
2. A conversation (on streams with user ``presence``/``routingStatus`` topics, also a user)
   active inside an uncovered interval, with no raw record of its key with
   ``ccstream-source: backfill`` and a ``ccstream-gap`` overlapping that activity (the part of
   it inside the interval). Judged for intervals whose reported gap has ``to + settle_s + 30 s``
   before the clean shutdown; a later one must be in ``open_gaps`` (one that is not is judged
   anyway: see ``Reported.judged``). Activity: a conversation's segments, a user's presence and
   routing-status records (an open one runs on); intervals are closed. Conversations are judged
   when the stream holds a topic other than user presence/routingStatus (s.7: only then does it
   backfill them).
3. An uncovered interval (server view: a ``Permitted`` topic with no open socket, down time
   included), followed by coverage, not inside the union of reported gaps (``stream.gap``,
   ``open_gaps``). No tolerance beyond the text's milliseconds: the client's gaps already carry
   the contract's 2 s on each side (s.6, ``[a - 2 s, b + 2 s]``).

**Duplicated**: two clean records with one dedup key. The simulator's rule counts (s.11
"Rules") are carried as ``rule_breaks``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ccstream.timefmt import rfc3339
from devtools.judges import (
    EPSILON_S,
    Evidence,
    Interval,
    Loss,
    Rec,
    Reported,
    Verdict,
    bytes_digest,
    contained,
    duplicated,
    inside,
    of_stream,
    overlaps,
    record_counts,
    split_dedup_key,
    text,
)

USER_STATUS_EVENTS = ("presence", "routingStatus")
CONVERSATION_EVENT, USER_EVENT = "backfill.conversation", "backfill.user"
UNCOVERED_TOLERANCE_S = EPSILON_S


@dataclass(frozen=True)
class GcSpec:
    """The judged stream as configured (s.1); ``topics`` are its topic templates."""

    stream: str
    client_id: str
    topics: tuple[str, ...]
    settle_s: float = 60.0
    backfill: bool = True

    def _names(self) -> list[str]:
        names = []
        for topic in self.topics:
            prefix, sep, tail = topic.partition("?")
            names += [f"{prefix}.{p}" for p in tail.split("&")] if sep else [topic]
        return names

    @property
    def user_topics(self) -> bool:
        """The stream holds a user presence or routingStatus topic: users are judged."""
        return any(n.split(".")[-1] in USER_STATUS_EVENTS for n in self._names())

    @property
    def conversation_topics(self) -> bool:
        return any(n.split(".")[-1] not in USER_STATUS_EVENTS for n in self._names())


def _client(ledger: Mapping[str, Any], spec: GcSpec) -> Mapping[str, Any]:
    try:
        doc: Mapping[str, Any] = ledger["clients"][spec.client_id]
    except KeyError:
        raise ValueError(f"the ledger has no OAuth client {spec.client_id!r}") from None
    if "notifications" not in doc or "conversations" not in doc:
        raise ValueError("the ledger was asked without notifications or activity")
    return doc


def _rule1(doc: Mapping[str, Any], raw: Sequence[Rec], union: list[Interval],
           counts: dict[str, int]) -> list[Loss]:
    values = {bytes_digest(r.value) for r in raw}
    lost = []
    for note in doc["notifications"]:
        at = float(note["sent_at"])
        if inside(at, union):
            counts["notifications_in_gaps"] += 1
            continue
        counts["notifications_judged"] += 1
        if note["sha256"] not in values:
            lost.append(Loss(1, f"{note['topicName']} @ {rfc3339(at)} (sent_at {at:.3f}, "
                                f"channel {note['channel']}, socket {note['socket']})",
                             f"written outside every reported gap; no raw record has these "
                             f"bytes (sha256 {str(note['sha256'])[:16]})"))
    return lost


def _segments(item: Mapping[str, Any]) -> Iterable[Interval]:
    for start, end in item.get("segments", ()):
        yield (float(start), float("inf") if end is None else float(end))


def _records(item: Mapping[str, Any]) -> Iterable[Interval]:
    for name in ("presence", "routingStatus"):
        for start, end, *_ in item.get(name, ()):
            yield (float(start), float("inf") if end is None else float(end))


def _activity(spans: Iterable[Interval], interval: Interval) -> list[Interval]:
    """The parts of ``spans`` inside ``interval`` (closed)."""
    return [(max(a, interval[0]), min(b, interval[1])) for a, b in spans
            if overlaps((a, b), interval)]


def _backfilled(raw: Sequence[Rec]) -> dict[tuple[str, str], list[Interval]]:
    """(eventType, key) -> the ``ccstream-gap`` of each raw backfill record of that key."""
    out: dict[tuple[str, str], list[Interval]] = {}
    for record in raw:
        if record.source != "backfill" or record.dedup_key is None:
            continue
        parts = split_dedup_key(record.dedup_key)
        gap = record.gap
        if parts is not None and gap is not None:
            out.setdefault((parts[0], parts[1]), []).append(gap)
    return out


def _rule2(doc: Mapping[str, Any], spec: GcSpec, raw: Sequence[Rec], reported: Reported,
           *, shutdown_at: float, counts: dict[str, int]) -> list[Loss]:
    if not spec.backfill:
        return []
    _, deferred = reported.judged(spec.settle_s, shutdown_at)
    filled = _backfilled(raw)
    kinds: list[tuple[str, str, str, Any]] = []
    if spec.conversation_topics:
        kinds.append(("conversation", CONVERSATION_EVENT, "conversationId", _segments))
    if spec.user_topics:
        kinds.append(("user", USER_EVENT, "userId", _records))
    lost: list[Loss] = []
    for pair in doc.get("uncovered", ()):
        interval = (float(pair[0]), float(pair[1]))
        mine = [g for g in reported.union if overlaps(g, interval)]
        if mine and all(g in deferred for g in mine):
            counts["uncovered_deferred"] += 1
            continue
        counts["uncovered_judged"] += 1
        for label, event, field, spans in kinds:
            for item in doc.get("conversations" if label == "conversation" else "users", ()):
                active = _activity(spans(item), interval)
                if not active:
                    continue
                counts[f"{label}s_judged"] += 1
                gaps = filled.get((event, str(item[field])), [])
                if any(overlaps(g, part) for g in gaps for part in active):
                    continue
                lost.append(Loss(2, f"{label} {item[field]}",
                                 f"active {', '.join(_span(p) for p in active)} inside the "
                                 f"uncovered interval {text(interval)}; no raw backfill record "
                                 f"of its key with a ccstream-gap overlapping that activity "
                                 f"(its backfill gaps: {', '.join(map(text, gaps)) or 'none'})"))
    return lost


def _rule3(doc: Mapping[str, Any], union: list[Interval], counts: dict[str, int]) -> list[Loss]:
    lost = []
    for pair in doc.get("uncovered", ()):
        interval = (float(pair[0]), float(pair[1]))
        counts["uncovered"] += 1
        if contained(interval, union, UNCOVERED_TOLERANCE_S):
            continue
        near = [g for g in union if overlaps(g, interval)]
        lost.append(Loss(3, f"uncovered {text(interval)} ({interval[1] - interval[0]:.3f} s)",
                         "not inside the union of reported gaps; overlapping: "
                         + (", ".join(text(g) for g in near) or "none")))
    return lost


def judge_gc(ledger: Mapping[str, Any], spec: GcSpec, evidence: Evidence) -> Verdict:
    """The verdict on one Genesys Cloud stream (see the module docstring for each rule)."""
    doc = _client(ledger, spec)
    raw = of_stream(evidence.raw, spec.stream)
    clean = of_stream(evidence.clean, spec.stream)
    reported = Reported.of(evidence.gap_lines, evidence.open_gaps, spec.stream)
    union = reported.union
    counts = {**record_counts(raw, clean, reported), "notifications": len(doc["notifications"]),
              "notifications_judged": 0, "notifications_in_gaps": 0, "uncovered": 0,
              "uncovered_judged": 0, "uncovered_deferred": 0, "conversations_judged": 0,
              "users_judged": 0}
    lost = [*_rule1(doc, raw, union, counts),
            *_rule2(doc, spec, raw, reported, shutdown_at=evidence.shutdown_at,
                   counts=counts),
            *_rule3(doc, union, counts)]
    return Verdict("genesys-cloud", spec.stream, tuple(lost), duplicated(clean), counts,
                   dict(evidence.rules))


def _span(interval: Interval) -> str:
    end = "open" if interval[1] == float("inf") else rfc3339(interval[1])
    return f"{rfc3339(interval[0])}..{end}"
