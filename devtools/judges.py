"""The judges of the real platforms' streams: what they share. Pure (no clock, no I/O).

A judge compares three things and returns a ``Verdict``:

(a) the simulator's ledger (the JSON of ``/_sim/ledger``, or the in-process ledger's
    ``to_json``): what the server held, wrote and when it was not heard;
(b) the raw and clean topics' records (``Rec``: key, value, headers), one stream's or all;
(c) the gaps the connector reported: its ``stream.gap`` JSON log lines and the final cursor's
    ``open_gaps``.

The platform rules live in ``judges_cxone`` (``cxone.md`` s.9) and ``judges_gc``
(``genesys-cloud.md`` s.11); this module holds the records, intervals and the verdict. It is
written from the contracts, not from ccstream's sources (``devtools`` may not import
``connectors``), so that it judges the connector rather than agreeing with it.

Times are epoch seconds (floats); the contracts' texts are RFC 3339 / ISO 8601 with an offset.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ccstream.records import H_DEDUP_KEY, H_GAP, H_SOURCE, H_STREAM
from ccstream.timefmt import parse_rfc3339, rfc3339

Interval = tuple[float, float]
# the contracts' "30 s": a gap is judged for backfill only once to + settle_s + 30 s is past
JUDGE_AFTER_SETTLE_S = 30.0
# how close two instants that are meant to be the same one must be (text round trips, ms)
EPSILON_S = 0.0015


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rec:
    """One Kafka record as the judge sees it."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def stream(self) -> str | None:
        return self.header(H_STREAM)

    @property
    def dedup_key(self) -> str | None:
        return self.header(H_DEDUP_KEY)

    @property
    def source(self) -> str | None:
        return self.header(H_SOURCE)

    @property
    def gap(self) -> Interval | None:
        """The ``ccstream-gap`` header as an interval (None if absent or unreadable)."""
        text = self.header(H_GAP)
        if text is None:
            return None
        start, sep, end = text.partition("/")
        a, b = parse_rfc3339(start), parse_rfc3339(end)
        if not sep or a is None or b is None:
            return None
        return (a, b)

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] | None
           ) -> Rec:
        return cls(key, value or b"", tuple((str(k), bytes(v)) for k, v in headers or ()))


def split_dedup_key(key: str) -> tuple[str, str, str] | None:
    """``eventType|correlationId|timestamp`` -> its three parts (the id may hold ``|``)."""
    head, sep, rest = key.partition("|")
    middle, sep2, tail = rest.rpartition("|")
    if not sep or not sep2:
        return None
    return head, middle, tail


def of_stream(records: Iterable[Rec], stream: str) -> list[Rec]:
    return [r for r in records if r.stream == stream]


def canonical(value: Any) -> bytes:
    """The contracts' canonical JSON: sorted keys, no spaces, UTF-8 (``genesys-cloud.md`` s.8)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def json_digest(data: bytes) -> str | None:
    """sha256 (hex) of the canonical form of the JSON in ``data``; None if it is not JSON."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return hashlib.sha256(canonical(value)).hexdigest()


def bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def duplicated(clean: Iterable[Rec]) -> dict[str, int]:
    """Dedup keys held by more than one clean record -> how many records hold each."""
    counts = Counter(r.dedup_key or "?" for r in clean)
    return {k: n for k, n in sorted(counts.items()) if n > 1}


# -- time and intervals -------------------------------------------------------------------------
def when(text: object) -> float:
    """Epoch seconds of a contract time; ValueError if it is not one (a judge never guesses)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    moment = parse_rfc3339(text)
    if moment is None:
        raise ValueError(f"not a time with an offset: {text!r}")
    return moment


def text(interval: Interval) -> str:
    """``from/to`` in RFC 3339 (the ``ccstream-gap`` form), for messages."""
    return f"{rfc3339(interval[0])}/{rfc3339(interval[1])}"


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of closed intervals: sorted, overlapping or touching ones joined."""
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] >= i[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def overlaps(a: Interval, b: Interval) -> bool:
    """Closed intervals share an instant."""
    return a[0] <= b[1] and b[0] <= a[1]


def inside(point: float, union: Sequence[Interval]) -> bool:
    return any(a <= point <= b for a, b in union)


def contained(interval: Interval, union: Sequence[Interval], tolerance_s: float = 0.0) -> bool:
    """``interval`` shrunk by ``tolerance_s`` at both ends lies inside the merged ``union``."""
    a, b = interval[0] + tolerance_s, interval[1] - tolerance_s
    if b < a:
        return True  # shorter than twice the tolerance: nothing left to cover
    return any(x <= a and b <= y for x, y in merge(union))


def uncovered_parts(interval: Interval, union: Sequence[Interval]) -> list[Interval]:
    """The parts of ``interval`` outside every interval of ``union`` (closed; edges may touch)."""
    parts: list[Interval] = []
    a, b = interval
    for x, y in merge(union):
        if y < a or x > b:
            continue
        if x > a:
            parts.append((a, x))
        a = max(a, y)
        if a >= b:
            break
    if a < b:
        parts.append((a, b))
    return parts


# -- what the connector reported ----------------------------------------------------------------
@dataclass(frozen=True)
class Reported:
    """The gaps a connector reported for one stream: ``stream.gap`` lines and ``open_gaps``."""

    logged: tuple[Interval, ...]
    open: tuple[Interval, ...]
    reasons: Mapping[str, int] = field(default_factory=dict)

    @property
    def union(self) -> list[Interval]:
        return merge((*self.logged, *self.open))

    @classmethod
    def of(cls, gap_lines: Iterable[Mapping[str, Any]], open_gaps: Iterable[Sequence[Any]] | None,
           stream: str | None = None) -> Reported:
        """From the connector's JSON log lines (those not ``stream.gap`` are skipped) and the
        final cursor's ``open_gaps``; lines of another stream are skipped when ``stream`` is
        given. An unreadable gap raises ValueError: a report the judge cannot read fails."""
        logged: list[Interval] = []
        reasons: Counter[str] = Counter()
        for line in gap_lines:
            if line.get("event") != "stream.gap":
                continue
            if stream is not None and line.get("stream") != stream:
                continue
            logged.append((when(line.get("from")), when(line.get("to"))))
            reasons[str(line.get("reason", "?"))] += 1
        opened = [(when(pair[0]), when(pair[1])) for pair in open_gaps or ()]
        return cls(tuple(logged), tuple(opened), dict(reasons))

    def judged(self, settle_s: float, shutdown_at: float) -> tuple[list[Interval], list[Interval]]:
        """The merged reported gaps split into (judged, deferred) for the backfill rule.

        The contracts judge a gap's backfill when ``to + settle_s + 30 s`` is before the clean
        shutdown; a later one must still be in ``open_gaps`` (deferred). A later gap that is
        *not* in ``open_gaps`` claims to be filled, so it is judged like an old one: a gap
        dropped from the cursor without its backfill cannot pass unseen."""
        judged, deferred = [], []
        for gap in self.union:
            late = gap[1] + settle_s + JUDGE_AFTER_SETTLE_S >= shutdown_at
            if late and contained(gap, self.open, EPSILON_S):
                deferred.append(gap)
            else:
                judged.append(gap)
        return judged, deferred


@dataclass(frozen=True)
class Evidence:
    """What the pipeline produced for the judge to weigh (any streams; the judge filters).

    ``shutdown_at``: the clean shutdown on the clock of the ledger's times (CXone: the server
    clock, ``CxoneSimulator.server_ms() / 1000``; Genesys Cloud: the simulator's clock).
    ``rules``: the simulator's counts of client rule violations (each must be 0)."""

    raw: Sequence[Rec]
    clean: Sequence[Rec]
    gap_lines: Sequence[Mapping[str, Any]]
    open_gaps: Sequence[Sequence[Any]]
    shutdown_at: float
    rules: Mapping[str, int] = field(default_factory=dict)


# -- the verdict --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Loss:
    """One lost item: the contract rule (1, 2 or 3) that catches it, what it is, and why."""

    rule: int
    item: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "item": self.item, "why": self.why}


@dataclass(frozen=True)
class Verdict:
    platform: str
    stream: str
    lost: tuple[Loss, ...]
    duplicated: Mapping[str, int]           # dedup key -> clean records holding it (> 1)
    counts: Mapping[str, int]               # live, backfill, raw, clean, gaps, judged items ...
    rule_breaks: Mapping[str, int] = field(default_factory=dict)   # the simulator's counts

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated and not any(self.rule_breaks.values())

    def lost_by_rule(self) -> dict[int, int]:
        out = {1: 0, 2: 0, 3: 0}
        for loss in self.lost:
            out[loss.rule] = out.get(loss.rule, 0) + 1
        return out

    def to_json(self, sample: int = 20) -> dict[str, Any]:
        return {
            "platform": self.platform, "stream": self.stream, "ok": self.ok,
            "lost": len(self.lost), "lost_by_rule": {str(k): v for k, v in
                                                     self.lost_by_rule().items()},
            "lost_sample": [loss.to_json() for loss in self.lost[:sample]],
            "duplicated": len(self.duplicated),
            "duplicated_sample": dict(list(self.duplicated.items())[:sample]),
            "counts": dict(self.counts), "rule_breaks": dict(self.rule_breaks),
        }

    def summary(self) -> str:
        c = self.counts
        rules = self.lost_by_rule()
        return (f"{self.stream} ({self.platform}): live {c.get('live', 0)}, backfill "
                f"{c.get('backfill', 0)}, gaps {c.get('gaps', 0)} (open {c.get('open_gaps', 0)}),"
                f" lost {len(self.lost)} (rule 1: {rules[1]}, 2: {rules[2]}, 3: {rules[3]}), "
                f"duplicated {len(self.duplicated)}")


def record_counts(raw: Sequence[Rec], clean: Sequence[Rec], reported: Reported) -> dict[str, int]:
    """The counts every verdict carries."""
    return {
        "raw": len(raw), "clean": len(clean),
        "live": sum(1 for r in raw if r.source == "live"),
        "backfill": sum(1 for r in raw if r.source == "backfill"),
        "clean_live": sum(1 for r in clean if r.source == "live"),
        "clean_backfill": sum(1 for r in clean if r.source == "backfill"),
        "gaps": len(reported.logged), "open_gaps": len(reported.open),
    }
