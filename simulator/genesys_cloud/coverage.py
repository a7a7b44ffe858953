"""Coverage bookkeeping, pure: the server's view of s.6 and of the judge's loss (3) in s.11.

Per OAuth client and single topic name, the board says which names are covered now (a live
channel holds it ``Permitted`` and has a receiving socket). ``Coverage.update`` is called after
every change with that set and ``now``; a name that stops being covered after having been covered
opens an uncovered interval, closed when it is covered again. Decisions:

- a name is tracked from its first coverage: set-up (``Permitted`` by the PUT answer, then the
  handshake) is not an interval, matching the contract's "with no cursor, no gap";
- down time counts: the interval runs from the last socket's close to the next coverage;
- a name never covered again (dropped from the client's list, or the client gone) stays *open*
  (``open``); only intervals followed by coverage are ``uncovered`` (the judge's (3));
- the client's uncovered intervals are the union over its names (an instant is covered when
  every ``Permitted`` name is), merged when they overlap or touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Track:
    covered: set[str] = field(default_factory=set)
    # name -> uncovered since (it was covered before)
    since: dict[str, float] = field(default_factory=dict)
    closed: set[tuple[float, float]] = field(default_factory=set)


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of closed intervals, sorted."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


class Coverage:
    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}

    def update(self, client_id: str, covered: set[str], now: float) -> None:
        track = self._tracks.setdefault(client_id, _Track())
        for name in track.covered - covered:
            track.since[name] = now
        for name in covered - track.covered:
            since = track.since.pop(name, None)
            if since is not None and now > since:
                track.closed.add((since, now))
        track.covered = set(covered)

    def uncovered(self, client_id: str) -> list[tuple[float, float]]:
        """Closed uncovered intervals (followed by coverage), merged."""
        track = self._tracks.get(client_id)
        return merge(list(track.closed)) if track else []

    def open(self, client_id: str) -> dict[str, float]:
        """Names uncovered now after having been covered: name -> since."""
        track = self._tracks.get(client_id)
        return dict(track.since) if track else {}

    def open_since(self, client_id: str) -> float | None:
        """The start of the current uncovered stretch, if some name is uncovered now."""
        since = self.open(client_id).values()
        return min(since) if since else None

    def is_covered(self, client_id: str, name: str) -> bool:
        track = self._tracks.get(client_id)
        return bool(track and name in track.covered)
