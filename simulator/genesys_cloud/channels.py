"""The channel board, pure: channels, their subscriptions and TTL, eviction, socket ownership.

``genesys-cloud.md`` s.3-s.5, as decisions: the board is told what happened (a POST, a PUT, a
handshake, a close) with ``now`` and answers what to do (``Action``: heartbeat, pong, close,
abort, 404 frame); the driver carries the actions out. Model decisions:

- A channel is *live* until it expires (``channel_ttl_s`` after creation or the last successful
  subscription call; GET/HEAD extend nothing) or is evicted; no call deletes it (real).
- ``POST /channels`` with ``max_channels`` live channels evicts the oldest by last use,
  socketless first (real); last use = creation, successful subscription call, socket open/close.
- One socket per channel: a handshake takes the channel; each older socket is *superseded* and
  closed 4000 "replaced" ``replace_grace_s`` later. Notifications go to the newest socket and,
  with ``grace_duplicates``, to superseded ones still open (duplicates allowed, s.5).
- A topic of a channel is *covered* while the channel is live, not taken by a foreign socket, and
  has a receiving socket (open, not silent, not closing): the server's view of s.6.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from simulator.genesys_cloud.access import TOLERANCE_S
from simulator.genesys_cloud.model import expand


class SockState(Enum):
    OPEN = "open"          # receiving notifications
    SILENT = "silent"      # half-open: no frame at all, no pong (the ``silent`` fault)
    CLOSING = "closing"    # the server sent (or is sending) its close / 404 frame, or aborted
    CLOSED = "closed"      # the connection is over


@dataclass(eq=False)
class Sock:
    id: str
    number: int            # the OAuth client's Nth socket, from 1
    channel_id: str
    client_id: str
    opened: float
    next_heartbeat: float
    state: SockState = SockState.OPEN
    notice_at: float | None = None        # a closing notice was sent
    close_at: float | None = None         # the server closes then with close_code
    close_code: int = 1001
    superseded_at: float | None = None    # the handshake of a newer socket on its channel
    replace_at: float | None = None       # 4000 "replaced" due then
    allowance: float = 1.0                # s.11: 5 s after a closing notice, 1 s otherwise
    overlap_counted: bool = False
    silent_until: float | None = None
    pong_delay_s: float = 0.0
    pong_delay_left: int = 0
    pong_drop_left: int = 0
    pongs_due: list[float] = field(default_factory=list)
    notifications: int = 0
    closed_at: float | None = None

    @property
    def alive(self) -> bool:
        """Open or silent: the server has not started to close it."""
        return self.state in (SockState.OPEN, SockState.SILENT)


@dataclass(frozen=True)
class ChannelTopic:
    id: str
    state: str                            # "Permitted" | "Rejected"
    reason: str | None = None
    missing: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id, "state": self.state}
        if self.reason is not None:
            doc["rejectionReason"] = self.reason
        if self.missing:
            doc["missingPermissions"] = list(self.missing)
        return doc


@dataclass(frozen=True)
class Verdict:
    """What the org says of one topic id: ``ok``, ``denied`` (403 / Rejected) or ``invalid``."""

    kind: str
    reason: str | None = None
    missing: tuple[str, ...] = ()


@dataclass(eq=False)
class Channel:
    id: str
    client_id: str
    created: float
    expires: float
    last_use: float
    topics: dict[str, ChannelTopic] = field(default_factory=dict)
    sockets: list[Sock] = field(default_factory=list)   # not yet closed, handshake order
    gone: str | None = None                             # "expired" | "evicted" | fault cause
    gone_at: float | None = None
    foreign: bool = False                               # a foreign socket took it
    names: frozenset[str] = frozenset()                 # single names of Permitted topics

    def alive_sockets(self) -> list[Sock]:
        return [s for s in self.sockets if s.alive]

    def has_socket(self) -> bool:
        return bool(self.alive_sockets())

    def receivers(self, grace_duplicates: bool) -> list[Sock]:
        if self.gone is not None or self.foreign:
            return []
        alive = self.alive_sockets()
        chosen = alive if grace_duplicates else alive[-1:]
        return [s for s in chosen if s.state is SockState.OPEN]


@dataclass(frozen=True)
class Action:
    kind: str              # "heartbeat" | "pong" | "close" | "abort" | "not_found"
    sock: Sock
    code: int = 1000
    reason: str = ""


@dataclass(frozen=True)
class Created:
    channel: Channel
    evicted: Channel | None
    over_limit: bool                      # every live channel had a socket (s.11 rule)
    actions: list[Action]


@dataclass(frozen=True)
class SubResult:
    status: int
    message: str = ""
    entities: list[dict[str, Any]] | None = None
    over_limit: bool = False              # > max_topics ids (s.11 rule)


class ChannelBoard:
    def __init__(self, *, ttl_s: float, max_channels: int, max_topics: int, heartbeat_s: float,
                 replace_grace_s: float, grace_duplicates: bool,
                 idle_close_s: float | None = None) -> None:
        self.ttl_s = ttl_s
        self.max_channels = max_channels
        self.max_topics = max_topics
        self.heartbeat_s = heartbeat_s
        self.replace_grace_s = replace_grace_s
        self.grace_duplicates = grace_duplicates
        self.idle_close_s = idle_close_s
        self.channels: dict[str, Channel] = {}
        self.sockets: dict[str, Sock] = {}
        self._numbers: dict[str, int] = {}
        # client -> single topic name -> ids of live channels holding it Permitted
        self._index: dict[str, dict[str, set[str]]] = {}

    # -- channels -------------------------------------------------------------------------------
    def live(self, client_id: str) -> list[Channel]:
        return [c for c in self.channels.values() if c.client_id == client_id and c.gone is None]

    def find(self, client_id: str, channel_id: str) -> Channel | None:
        """A live channel of this client (another client's channel is 404 too)."""
        channel = self.channels.get(channel_id)
        if channel is None or channel.client_id != client_id or channel.gone is not None:
            return None
        return channel

    def create(self, client_id: str, channel_id: str, now: float) -> Created:
        live = self.live(client_id)
        evicted, over, actions = None, False, []
        if len(live) >= self.max_channels:
            over = all(c.has_socket() for c in live)
            evicted = min(live, key=lambda c: (c.has_socket(), c.last_use, c.created))
            actions = self.make_gone(evicted, "evicted", now)
        channel = Channel(channel_id, client_id, now, now + self.ttl_s, now)
        self.channels[channel_id] = channel
        return Created(channel, evicted, over, actions)

    def subscribe(self, channel: Channel, ids: list[str], *, replace: bool,
                  ignore_errors: bool, now: float, check: Callable[[str], Verdict]) -> SubResult:
        """PUT (``replace``) or POST (add) of a topic list (s.3 server cases, in this order)."""
        wanted = list(dict.fromkeys(ids))
        held = [] if replace else list(channel.topics)
        result = list(dict.fromkeys([*held, *wanted]))
        if len(result) > self.max_topics:
            return SubResult(400, f"a channel holds at most {self.max_topics} topics, this call "
                             f"would leave {len(result)}", over_limit=True)
        verdicts = {t: check(t) for t in wanted}
        invalid = [t for t, v in verdicts.items() if v.kind == "invalid"]
        denied = [t for t, v in verdicts.items() if v.kind == "denied"]
        if invalid and not ignore_errors:
            return SubResult(400, f"invalid topics: {', '.join(invalid[:5])}")
        if denied and not ignore_errors:
            return SubResult(403, f"missing permissions for topics: {', '.join(denied[:5])}")
        topics: dict[str, ChannelTopic] = {}
        for t in result:
            verdict = verdicts.get(t)
            if verdict is None:
                topics[t] = channel.topics[t]
            elif verdict.kind == "ok":
                topics[t] = ChannelTopic(t, "Permitted")
            else:
                topics[t] = ChannelTopic(t, "Rejected", verdict.reason, verdict.missing)
        channel.topics = topics
        channel.expires = now + self.ttl_s   # real: resubscribe to keep a channel > 24 h
        channel.last_use = now
        self._reindex(channel)
        return SubResult(200, entities=[t.to_json() for t in topics.values()])

    def make_gone(self, channel: Channel, cause: str, now: float) -> list[Action]:
        """Expiry or eviction: every socket gets the 404 frame, then close 1000 (s.5)."""
        if channel.gone is not None:
            return []
        channel.gone, channel.gone_at = cause, now
        self._reindex(channel)
        actions = []
        for sock in channel.alive_sockets():
            sock.state = SockState.CLOSING
            actions.append(Action("not_found", sock, 1000, cause))
        return actions

    def take_foreign(self, channel: Channel, now: float) -> list[Action]:
        """A foreign socket takes the channel: the client's sockets get 4000 at once."""
        channel.foreign = True
        channel.last_use = now
        return [self.close(s, 4000, "replaced") for s in channel.alive_sockets()]

    def _reindex(self, channel: Channel) -> None:
        index = self._index.setdefault(channel.client_id, {})
        for name in channel.names:
            holders = index.get(name)
            if holders is not None:
                holders.discard(channel.id)
                if not holders:
                    del index[name]
        names: set[str] = set()
        if channel.gone is None:
            for topic in channel.topics.values():
                if topic.state == "Permitted":
                    names.update(expand(topic.id))
        channel.names = frozenset(names)
        for name in names:
            index.setdefault(name, set()).add(channel.id)

    # -- sockets --------------------------------------------------------------------------------
    def open_socket(self, channel_id: str, socket_id: str, now: float) -> Sock | None:
        """A handshake on ``/channels/{id}``; None if the channel is unknown or gone."""
        channel = self.channels.get(channel_id)
        if channel is None or channel.gone is not None:
            return None
        number = self._numbers.get(channel.client_id, 0) + 1
        self._numbers[channel.client_id] = number
        sock = Sock(socket_id, number, channel_id, channel.client_id, now,
                    now + self.heartbeat_s)
        for old in channel.alive_sockets():
            if old.superseded_at is None:
                old.superseded_at = now
                old.allowance = 5.0 if old.notice_at is not None else 1.0
                old.replace_at = now + self.replace_grace_s
        channel.sockets.append(sock)
        channel.foreign = False
        channel.last_use = now
        self.sockets[socket_id] = sock
        return sock

    def socket_closed(self, sock: Sock, now: float) -> None:
        """The connection is over (either side, or the TCP connection went away)."""
        sock.state, sock.closed_at = SockState.CLOSED, now
        self.sockets.pop(sock.id, None)
        channel = self.channels.get(sock.channel_id)
        if channel is not None:
            if sock in channel.sockets:
                channel.sockets.remove(sock)
            if channel.gone is None:
                channel.last_use = now

    def close(self, sock: Sock, code: int, reason: str = "") -> Action:
        sock.state = SockState.CLOSING
        return Action("close", sock, code, reason)

    def abort(self, sock: Sock, reason: str) -> Action:
        sock.state = SockState.CLOSING
        return Action("abort", sock, 0, reason)

    def notice(self, sock: Sock, now: float, delay_s: float) -> None:
        """A closing notice was sent: 1001 ``delay_s`` later (s.5: "about 1 minute")."""
        sock.notice_at = now
        sock.close_at = now + delay_s
        sock.close_code = 1001

    def silence(self, sock: Sock, now: float, hold_s: float) -> None:
        sock.state = SockState.SILENT
        sock.silent_until = now + hold_s

    def on_ping(self, sock: Sock, now: float) -> str:
        """A ``{"message": "ping"}``: ``now``, ``delayed`` (queued), ``dropped`` or ``none``."""
        if sock.state is not SockState.OPEN:
            return "none"
        if sock.pong_drop_left > 0:
            sock.pong_drop_left -= 1
            return "dropped"
        if sock.pong_delay_left > 0:
            sock.pong_delay_left -= 1
            sock.pongs_due.append(now + sock.pong_delay_s)
            return "delayed"
        return "now"

    def current(self, client_id: str, number: int | None = None) -> Sock | None:
        """The client's newest receiving socket (or its Nth socket, if still open)."""
        found = [s for s in self.sockets.values() if s.client_id == client_id
                 and s.state is SockState.OPEN and (number is None or s.number == number)]
        return max(found, key=lambda s: (s.opened, s.number), default=None)

    def channel_with_socket(self, client_id: str, channel_id: str | None) -> Channel | None:
        """A fault's target channel: the one named, else the live one with the newest socket."""
        if channel_id is not None:
            return self.find(client_id, channel_id)
        sock = self.current(client_id)
        return None if sock is None else self.find(client_id, sock.channel_id)

    # -- delivery and coverage -----------------------------------------------------------------
    def receivers(self, client_id: str, name: str) -> list[tuple[Channel, Sock]]:
        """Where a notification on ``name`` goes now (empty: nobody listens, it is gone)."""
        out: list[tuple[Channel, Sock]] = []
        for channel_id in sorted(self._index.get(client_id, {}).get(name, ())):
            channel = self.channels[channel_id]
            out.extend((channel, s) for s in channel.receivers(self.grace_duplicates))
        return out

    def covered(self, client_id: str) -> set[str]:
        names: set[str] = set()
        for channel in self.live(client_id):
            if channel.receivers(self.grace_duplicates):
                names.update(channel.names)
        return names

    def clients(self) -> set[str]:
        return {c.client_id for c in self.channels.values()}

    # -- time -----------------------------------------------------------------------------------
    def due(self, now: float) -> list[Action]:
        """What the clock makes due now on sockets: closes, aborts, heartbeats, pongs (call
        ``expire`` first)."""
        actions: list[Action] = []
        for sock in list(self.sockets.values()):
            action = self._due_socket(sock, now)
            if action is not None:
                actions.append(action)
            if sock.state is SockState.OPEN and sock.pongs_due:
                ready = [t for t in sock.pongs_due if t <= now]
                sock.pongs_due = [t for t in sock.pongs_due if t > now]
                actions.extend(Action("pong", sock) for _ in ready)
        return actions

    def expire(self, now: float) -> tuple[list[Channel], list[Action]]:
        """Channels past their expiry are gone now (24 h without a subscription call)."""
        expired, actions = [], []
        for channel in list(self.channels.values()):
            if channel.gone is None and now >= channel.expires:
                expired.append(channel)
                actions.extend(self.make_gone(channel, "expired", now))
        return expired, actions

    def _due_socket(self, sock: Sock, now: float) -> Action | None:
        if sock.state is SockState.SILENT:
            due = sock.silent_until is not None and now >= sock.silent_until
            return self.abort(sock, "silent") if due else None
        if sock.state is not SockState.OPEN:
            return None
        close = self._due_close(sock, now)
        if close is not None:
            return self.close(sock, *close)
        if now >= sock.next_heartbeat:
            sock.next_heartbeat = now + self.heartbeat_s
            return Action("heartbeat", sock)
        return None

    def _due_close(self, sock: Sock, now: float) -> tuple[int, str] | None:
        if sock.replace_at is not None and now >= sock.replace_at:
            return 4000, "replaced"
        if sock.close_at is not None and now >= sock.close_at:
            return sock.close_code, ""
        channel = self.channels[sock.channel_id]
        if (self.idle_close_s is not None and not channel.topics
                and now - max(sock.opened, channel.last_use) >= self.idle_close_s):
            return 1001, "idle"
        return None

    def overlaps(self, now: float) -> Iterator[Sock]:
        """Superseded sockets still open past their allowance (s.11), each reported once."""
        for sock in list(self.sockets.values()):
            if (sock.alive and sock.superseded_at is not None and not sock.overlap_counted
                    and now > sock.superseded_at + sock.allowance + TOLERANCE_S):
                channel = self.channels[sock.channel_id]
                if any(s.alive and s.opened >= sock.superseded_at and s is not sock
                       for s in channel.sockets):
                    sock.overlap_counted = True
                    yield sock
