"""The analytics side, pure: the activity of an org and the details queries over it (s.7).

``ActivityStore`` is the truth: every conversation (participants, sessions, segments) and every
user's presence and routing-status records, as the generator made them (server clock). The
judge reads it from the ledger. ``AnalyticsQuery`` answers ``POST /api/v2/analytics/
{conversations,users}/details/query`` over it. Model decisions (*modelled*):

- Data lag: a query at ``now`` sees the data as of ``V = now - L`` (a segment or record whose
  start is after ``V`` is not there yet; an end after ``V`` is not shown). ``V`` never moves back
  per client, so a lag fault that raises L hides nothing already shown ("never removed").
- Matching: every conversation with a (visible) segment overlapping ``[from, to)``, every user
  with a presence or routing-status record overlapping it (open records overlap every later
  interval); a user entry lists the records overlapping the interval.
- Order: conversations by ``conversationStart`` (``order`` asc|desc), then id; users by id.
- Paging: page N of size P is items ``(N-1)P .. NP-1`` of the list at the time of that request.
  The ``analytics`` fault *inserts* K items in front (copies of the first K: later pages repeat
  items, none is skipped) and makes ``totalHits`` drift; both are per (client, kind, interval).
- An empty page omits the list (real: "a missing list = empty").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from simulator.genesys_cloud.model import iso_ms, parse_interval

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 25


def _overlaps(start: float, end: float | None, a: float, b: float) -> bool:
    return start < b and (end is None or end > a)


@dataclass
class Segment:
    start: float
    end: float | None
    segment_type: str
    queue_id: str | None = None

    def shown_end(self, visible: float) -> float | None:
        return self.end if self.end is not None and self.end <= visible else None

    def to_json(self, visible: float) -> dict[str, Any]:
        doc: dict[str, Any] = {"segmentStart": iso_ms(self.start)}
        end = self.shown_end(visible)
        if end is not None:
            doc["segmentEnd"] = iso_ms(end)
        doc["segmentType"] = self.segment_type
        if self.queue_id is not None:
            doc["queueId"] = self.queue_id
        return doc


@dataclass
class Session:
    id: str
    media_type: str
    segments: list[Segment] = field(default_factory=list)


@dataclass
class Participant:
    id: str
    purpose: str
    user_id: str | None = None
    sessions: list[Session] = field(default_factory=list)


@dataclass
class Conversation:
    id: str
    start: float
    queue_id: str
    end: float | None = None
    participants: list[Participant] = field(default_factory=list)

    def segments(self) -> Iterator[Segment]:
        for participant in self.participants:
            for session in participant.sessions:
                yield from session.segments

    def user_ids(self) -> list[str]:
        return [p.user_id for p in self.participants if p.user_id is not None]

    def matches(self, a: float, b: float, visible: float) -> bool:
        return any(s.start <= visible and _overlaps(s.start, s.shown_end(visible), a, b)
                   for s in self.segments())

    def to_json(self, visible: float) -> dict[str, Any]:
        """AnalyticsConversationWithoutAttributes as of ``visible``."""
        doc: dict[str, Any] = {"conversationId": self.id,
                               "conversationStart": iso_ms(self.start)}
        if self.end is not None and self.end <= visible:
            doc["conversationEnd"] = iso_ms(self.end)
        doc["originatingDirection"] = "inbound"
        participants = []
        for p in self.participants:
            sessions = []
            for s in p.sessions:
                segments = [g.to_json(visible) for g in s.segments if g.start <= visible]
                if segments:
                    sessions.append({"sessionId": s.id, "mediaType": s.media_type,
                                     "direction": "inbound", "segments": segments})
            if sessions:
                entry: dict[str, Any] = {"participantId": p.id, "purpose": p.purpose}
                if p.user_id is not None:
                    entry["userId"] = p.user_id
                entry["sessions"] = sessions
                participants.append(entry)
        doc["participants"] = participants
        return doc

    def activity(self) -> dict[str, Any]:
        """The ledger's (true, unlagged) view: when it was active and where."""
        return {"conversationId": self.id, "start": self.start, "end": self.end,
                "queueId": self.queue_id, "userIds": self.user_ids(),
                "segments": [[s.start, s.end] for s in self.segments()]}


@dataclass
class StatusRecord:
    start: float
    value: str
    end: float | None = None
    presence_id: str | None = None   # organizationPresenceId (presence records only)


@dataclass
class UserActivity:
    user_id: str
    presence: list[StatusRecord] = field(default_factory=list)
    routing: list[StatusRecord] = field(default_factory=list)

    def to_json(self, a: float, b: float, visible: float) -> dict[str, Any] | None:
        def shown(records: list[StatusRecord]) -> list[tuple[StatusRecord, float | None]]:
            out = []
            for r in records:
                end = r.end if r.end is not None and r.end <= visible else None
                if r.start <= visible and _overlaps(r.start, end, a, b):
                    out.append((r, end))
            return out

        presence, routing = shown(self.presence), shown(self.routing)
        if not presence and not routing:
            return None
        doc: dict[str, Any] = {"userId": self.user_id}
        if presence:
            doc["primaryPresence"] = [_status(r, end, "systemPresence") for r, end in presence]
        if routing:
            doc["routingStatus"] = [_status(r, end, "routingStatus") for r, end in routing]
        return doc

    def activity(self) -> dict[str, Any]:
        return {"userId": self.user_id,
                "presence": [[r.start, r.end, r.value] for r in self.presence],
                "routingStatus": [[r.start, r.end, r.value] for r in self.routing]}


def _status(record: StatusRecord, end: float | None, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"startTime": iso_ms(record.start)}
    if end is not None:
        doc["endTime"] = iso_ms(end)
    doc[name] = record.value
    if record.presence_id is not None:
        doc["organizationPresenceId"] = record.presence_id
    return doc


class ActivityStore:
    """One org's activity (insertion order of conversations = start order)."""

    def __init__(self) -> None:
        self.conversations: dict[str, Conversation] = {}
        self.users: dict[str, UserActivity] = {}

    def user(self, user_id: str) -> UserActivity:
        return self.users.setdefault(user_id, UserActivity(user_id))

    def to_json(self) -> dict[str, Any]:
        return {"conversations": [c.activity() for c in self.conversations.values()],
                "users": [u.activity() for u in self.users.values()]}


class QueryError(ValueError):
    """A details query the API answers 400."""


@dataclass(frozen=True)
class PageEffect:
    """What an ``analytics`` fault does to one page: items inserted in front, totalHits drift."""

    insert: int = 0
    drift: int = 0


def _paging(body: dict[str, Any]) -> tuple[int, int]:
    paging = body.get("paging", {})
    if not isinstance(paging, dict):
        raise QueryError("paging must be an object")
    size, number = paging.get("pageSize", DEFAULT_PAGE_SIZE), paging.get("pageNumber", 1)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_PAGE_SIZE:
        raise QueryError(f"paging.pageSize must be 1..{MAX_PAGE_SIZE}")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise QueryError("paging.pageNumber must be >= 1")
    return size, number


class AnalyticsQuery:
    def __init__(self, lag_s: float) -> None:
        self.lag_s = lag_s
        self._visible: dict[str, float] = {}
        self._lag: dict[str, tuple[float, float]] = {}       # client -> (lag, until)
        self._inserted: dict[tuple[str, str, str], int] = {}

    def set_lag(self, client_id: str, lag_s: float, until: float) -> None:
        self._lag[client_id] = (lag_s, until)

    def lag(self, client_id: str, now: float) -> float:
        lag, until = self._lag.get(client_id, (self.lag_s, float("inf")))
        return lag if now < until else self.lag_s

    def visible(self, client_id: str, now: float) -> float:
        """``now - L``, never moving back for a client."""
        moment = max(self._visible.get(client_id, float("-inf")), now - self.lag(client_id, now))
        self._visible[client_id] = moment
        return moment

    def page(self, client_id: str, store: ActivityStore, kind: str, body: Any, *, now: float,
             effect: PageEffect = PageEffect()) -> dict[str, Any]:
        """The 200 answer of one page; QueryError (400) if the body is not a valid query."""
        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object")
        interval = body.get("interval")
        if not isinstance(interval, str):
            raise QueryError("interval is required: <from>/<to>, ISO 8601")
        try:
            a, b = parse_interval(interval)
        except ValueError as err:
            raise QueryError(str(err)) from None
        size, number = _paging(body)
        visible = self.visible(client_id, now)
        items = self._items(store, kind, body, (a, b), visible)
        key = (client_id, kind, interval)
        inserted = self._inserted.get(key, 0) + effect.insert
        if inserted:
            self._inserted[key] = inserted
        listing = [items[i % len(items)] for i in range(inserted)] + items if items else []
        chunk = listing[(number - 1) * size: number * size]
        name = "conversations" if kind == "conversations" else "userDetails"
        doc: dict[str, Any] = {}
        if chunk:
            doc[name] = chunk
        doc["totalHits"] = max(0, len(listing) + effect.drift)
        return doc

    @staticmethod
    def _items(store: ActivityStore, kind: str, body: dict[str, Any],
               interval: tuple[float, float], visible: float) -> list[dict[str, Any]]:
        a, b = interval
        if kind == "conversations":
            order = body.get("order", "asc")
            if order not in ("asc", "desc"):
                raise QueryError("order must be asc or desc")
            found = sorted((c for c in store.conversations.values() if c.matches(a, b, visible)),
                           key=lambda c: (c.start, c.id), reverse=order == "desc")
            return [c.to_json(visible) for c in found]
        out = []
        for user_id in sorted(store.users):
            doc = store.users[user_id].to_json(a, b, visible)
            if doc is not None:
                out.append(doc)
        return out
