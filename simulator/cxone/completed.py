"""Completed contacts, pure: what ``contacts/completed`` lists and how its pages shift.

Contract s.6 (*modelled*): the listing is every contact whose completion time (its final
``lastUpdateTime``) lies in ``[startDate, endDate]``, in completion order, and a completion is
listed only once its own lag has passed (``visible_ms``; at most ``completion_lag_s``, which must
stay <= ``settle_s``/2). A completion that becomes visible after an earlier-completed neighbour
is therefore *inserted* into a listing a reader is paging through: later rows shift by one and
the reader sees one row again, none is removed. The ``completed_shift`` fault does the same on
demand by listing rows of the page just served once more (``relist``): a row shown twice keeps
its JSON, so it is a repeat, never a new contact.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from simulator.cxone.values import digest, iso_ms


@dataclass
class Completion:
    contact_id: str
    completed_ms: int
    visible_ms: int
    row: dict[str, Any]
    seq: int
    digest: str
    copies: int = 0      # extra listings made by completed_shift

    def to_json(self, with_row: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "contactId": self.contact_id, "completed_at": iso_ms(self.completed_ms),
            "visible_at": iso_ms(self.visible_ms), "sha256": self.digest,
            "relisted": self.copies,
        }
        if with_row:
            out["row"] = self.row
        return out


@dataclass(frozen=True)
class Page:
    rows: tuple[Completion, ...]
    total: int           # totalRecords: the listing's length when the page was made
    more: bool           # rows remain after this page (``_links.next``)


class CompletedStore:
    """One tenant's completed contacts, kept in completion order."""

    def __init__(self) -> None:
        self.entries: list[Completion] = []
        self._order: list[tuple[int, int]] = []

    def add(self, contact_id: str, row: dict[str, Any], completed_ms: int,
            visible_ms: int) -> Completion:
        entry = Completion(contact_id, completed_ms, visible_ms, row, len(self.entries),
                           digest(row))
        place = bisect.bisect_right(self._order, (completed_ms, entry.seq))
        self._order.insert(place, (completed_ms, entry.seq))
        self.entries.insert(place, entry)
        return entry

    def listing(self, start_ms: int, end_ms: int, now_ms: int) -> list[Completion]:
        """The rows the server lists now for ``[start, end]`` (a relisted row twice, adjacent)."""
        low = bisect.bisect_left(self._order, (start_ms, -1))
        high = bisect.bisect_right(self._order, (end_ms, len(self.entries)))
        out: list[Completion] = []
        for entry in self.entries[low:high]:
            if entry.visible_ms <= now_ms:
                out.extend([entry] * (1 + entry.copies))
        return out

    def page(self, start_ms: int, end_ms: int, now_ms: int, skip: int, top: int) -> Page:
        rows = self.listing(start_ms, end_ms, now_ms)
        chunk = tuple(rows[skip:skip + top])
        return Page(chunk, len(rows), skip + len(chunk) < len(rows))

    def relist(self, page: Page, rows: int) -> int:
        """List ``rows`` distinct rows of ``page`` once more, spread over it; how many."""
        distinct = list(dict.fromkeys(id(e) for e in page.rows))
        by_id = {id(e): e for e in page.rows}
        count = min(rows, len(distinct))
        for index in range(count):
            by_id[distinct[index * len(distinct) // count]].copies += 1
        return count

    def visible(self, now_ms: int) -> int:
        return sum(1 for e in self.entries if e.visible_ms <= now_ms)
