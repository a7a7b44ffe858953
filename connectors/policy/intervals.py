"""Closed intervals of epoch seconds: merging, overlap, the form cursors carry. Pure.

Gaps (an interval whose events may not have been delivered live) are kept as ``(from, to)``
pairs. Both real platforms' sources merge overlapping gaps, keep the open ones in the cursor as
``[["<from>", "<to>"], ...]`` (RFC 3339 with milliseconds) and fill them oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable

from ccstream.timefmt import parse_rfc3339, rfc3339

Interval = tuple[float, float]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Overlapping or touching intervals joined, sorted by start; empty ones dropped."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] >= i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def overlaps(a: Interval, b: Interval) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def covered(point: float, intervals: Iterable[Interval]) -> bool:
    return any(start <= point <= end for start, end in intervals)


def to_json(intervals: Iterable[Interval]) -> list[list[str]]:
    """The cursor form: ``[["2024-01-15T10:30:00.000Z", "2024-01-15T10:31:05.000Z"], ...]``."""
    return [[rfc3339(start), rfc3339(end)] for start, end in intervals]


def from_json(value: object) -> list[Interval]:
    """The cursor form read back; items that do not parse are dropped (readers are lenient)."""
    out: list[Interval] = []
    if not isinstance(value, list):
        return out
    for item in value:
        if isinstance(item, list) and len(item) == 2:
            start, end = parse_rfc3339(item[0]), parse_rfc3339(item[1])
            if start is not None and end is not None:
                out.append((start, end))
    return merge(out)


def label(interval: Interval) -> str:
    """``from/to`` as the ``ccstream-gap`` header carries it."""
    return f"{rfc3339(interval[0])}/{rfc3339(interval[1])}"
