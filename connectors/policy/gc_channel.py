"""One Genesys Cloud channel slot as an explicit state machine, and what every answer means. Pure.

genesys-cloud contract §3-§5. A *slot* is one of the stream's C packed topic lists; it always
has at most one channel (made with ``POST /channels``, subscribed with ``PUT ...?ignoreErrors=
true``) and one *current* socket on it (a superseded one may still be closing). The driver does
the I/O of each state and feeds the outcome back as an ``Event``; ``step`` says where it leads,
and refuses a move the table does not hold (a defect, never the platform's doing)::

    NEW ─CREATED─► SUBSCRIBING ─SUBSCRIBED─► CONNECTING ─CONNECTED─► OPEN ◄─SWITCHED─ SWITCHING
     ▲                 │ GONE                 │ FAILED              │ │ CLOSING_NOTICE ──►│
     ├─────────────────┘                      ▼                     │ └ ROLLED_OVER (stay)
     ├──── GONE / REPLACED ─────────────── WAITING ◄─── CLOSED ─────┘
     │                                        │ BACKOFF_OVER
     └────────────── GONE (HEAD 404) ───── CHECKING ─HEAD_OK─► CONNECTING

Endings of the current socket (``classify_end``): 4000 = another socket took the channel (a new
channel, never that one again); a 404 frame = the channel is gone (a new channel); anything else
(1001, other codes, reset, dead) = back off, then ``HEAD`` the channel: 200 reconnect to it, 404
make a new one. An ending of a superseded socket means nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from connectors.policy.keepalive import Beat, Tick


class ChannelState(enum.Enum):
    NEW = "new"                    # no usable channel: POST one
    SUBSCRIBING = "subscribing"    # PUT the whole list
    CONNECTING = "connecting"      # dial connectUri (no token)
    OPEN = "open"                  # the current socket covers the channel
    SWITCHING = "switching"        # a closing notice: S' is being opened while S still reads
    WAITING = "waiting"            # backing off after a socket ended or a dial failed
    CHECKING = "checking"          # HEAD the channel: still there?
    STOPPED = "stopped"
    FAILED = "failed"


class Event(enum.Enum):
    CREATED = "created"            # POST /channels answered 200
    SUBSCRIBED = "subscribed"      # PUT answered 200
    CONNECTED = "connected"        # the socket's handshake succeeded
    CONNECT_FAILED = "connect_failed"
    CLOSING_NOTICE = "closing_notice"
    SWITCHED = "switched"          # S' is open; S is being closed with 1000
    SWITCH_FAILED = "switch_failed"  # S' failed: keep S, retry S' after a backoff
    ROLLED_OVER = "rolled_over"    # the rollover PUT answered 200
    CLOSED = "closed"              # the current socket ended (close, reset, dead)
    REPLACED = "replaced"          # 4000 on the current socket
    GONE = "gone"                  # 404 frame, HEAD 404, subscription 404, handshake 404
    BACKOFF_OVER = "backoff_over"
    HEAD_OK = "head_ok"
    FATAL = "fatal"                # a non-retriable answer: the stream fails
    STOP = "stop"


_S, _E = ChannelState, Event
TABLE: dict[tuple[ChannelState, Event], ChannelState] = {
    (_S.NEW, _E.CREATED): _S.SUBSCRIBING,
    (_S.SUBSCRIBING, _E.SUBSCRIBED): _S.CONNECTING,
    (_S.SUBSCRIBING, _E.GONE): _S.NEW,
    (_S.CONNECTING, _E.CONNECTED): _S.OPEN,
    (_S.CONNECTING, _E.CONNECT_FAILED): _S.WAITING,
    (_S.CONNECTING, _E.GONE): _S.NEW,
    (_S.OPEN, _E.CLOSING_NOTICE): _S.SWITCHING,
    (_S.OPEN, _E.ROLLED_OVER): _S.OPEN,
    (_S.OPEN, _E.CLOSED): _S.WAITING,
    (_S.OPEN, _E.REPLACED): _S.NEW,
    (_S.OPEN, _E.GONE): _S.NEW,
    (_S.SWITCHING, _E.SWITCHED): _S.OPEN,
    (_S.SWITCHING, _E.SWITCH_FAILED): _S.SWITCHING,
    (_S.SWITCHING, _E.ROLLED_OVER): _S.SWITCHING,
    (_S.SWITCHING, _E.CLOSED): _S.WAITING,
    (_S.SWITCHING, _E.REPLACED): _S.NEW,
    (_S.SWITCHING, _E.GONE): _S.NEW,
    (_S.WAITING, _E.BACKOFF_OVER): _S.CHECKING,
    (_S.CHECKING, _E.HEAD_OK): _S.CONNECTING,
    (_S.CHECKING, _E.GONE): _S.NEW,
}
LIVE = (_S.NEW, _S.SUBSCRIBING, _S.CONNECTING, _S.OPEN, _S.SWITCHING, _S.WAITING, _S.CHECKING)
for _state in LIVE:  # every live state may stop, and fail on a non-retriable answer
    TABLE[(_state, _E.STOP)] = _S.STOPPED
    TABLE[(_state, _E.FATAL)] = _S.FAILED
# the allowed moves, as aiokafka's ``TransactionState`` keeps them
TRANSITIONS: dict[ChannelState, frozenset[ChannelState]] = {
    state: frozenset(to for (frm, _), to in TABLE.items() if frm is state)
    for state in ChannelState
}


class ChannelTransitionError(RuntimeError):
    """An event the table does not expect in this state: a defect of the driver."""

    retriable = False

    def __init__(self, state: ChannelState, event: Event) -> None:
        super().__init__(f"channel slot in state {state.value} cannot take {event.value}")
        self.state = state
        self.event = event


def step(state: ChannelState, event: Event) -> ChannelState:
    try:
        return TABLE[(state, event)]
    except KeyError:
        raise ChannelTransitionError(state, event) from None


# -- how a socket ended (§5 "client sees") ---------------------------------------------------------
class Ending(enum.Enum):
    SUPERSEDED = "superseded"      # not the current socket: nothing to do
    SHUTDOWN = "shutdown"
    GONE = "gone"                  # a 404 frame came first
    REPLACED = "replaced"          # 4000: another socket took the channel
    DEAD = "dead"                  # the health check found it dead
    CLOSED = "closed"              # 1001, any other close, a reset


# the gap reason of each ending of the current socket (§6)
GAP_REASONS = {Ending.GONE: "channel_gone", Ending.REPLACED: "replaced",
               Ending.DEAD: "socket_dead", Ending.CLOSED: "socket_closed",
               Ending.SHUTDOWN: "process_down", Ending.SUPERSEDED: "socket_closed"}
EVENTS = {Ending.GONE: Event.GONE, Ending.REPLACED: Event.REPLACED, Ending.DEAD: Event.CLOSED,
          Ending.CLOSED: Event.CLOSED, Ending.SHUTDOWN: Event.STOP}
REPLACED_CODE = 4000


def classify_end(*, current: bool, stopping: bool, gone_frame: bool, dead: bool,
                 code: int | None) -> Ending:
    """What the end of a socket means (``code``: the close code received, None: no close
    frame)."""
    if stopping:
        return Ending.SHUTDOWN
    if not current:
        return Ending.SUPERSEDED  # §5: 4000 "on a socket it superseded: nothing"
    if gone_frame:
        return Ending.GONE
    if code == REPLACED_CODE:
        return Ending.REPLACED
    if dead:
        return Ending.DEAD
    return Ending.CLOSED


def covered_until(*, close_frame_at: float | None, gone_frame_at: float | None,
                  last_frame_at: float, dead: bool) -> float:
    """§6: a socket covers until the close frame or a 404 frame arrives; one ending with neither
    (reset, read error, dead) until its last frame."""
    if gone_frame_at is not None:
        return gone_frame_at
    if close_frame_at is not None and not dead:
        return close_frame_at
    return last_frame_at


# -- what a REST answer means (§3 "client gets") ------------------------------------------------
class Answer(enum.Enum):
    OK = "ok"
    HOLD = "hold"          # 429: nothing of this OAuth client before Retry-After, then the same
    AUTH = "auth"          # 401: one new token and one retry, then the stream fails
    NOT_FOUND = "not_found"  # 404: on a channel, the channel is gone
    RETRY = "retry"        # 5xx, no answer: backoff, the same call
    FATAL = "fatal"        # 400, 403, any other: the stream fails with one line


def classify_answer(status: int | None) -> Answer:
    if status is None or status >= 500:
        return Answer.RETRY
    if 200 <= status < 300:
        return Answer.OK
    if status == 429:
        return Answer.HOLD
    if status == 401:
        return Answer.AUTH
    if status == 404:
        return Answer.NOT_FOUND
    return Answer.FATAL


# -- the health check (§5, *modelled*) ----------------------------------------------------------
class Health:
    """``after_s`` with no frame of any kind: send ``{"message": "ping"}``; nothing within
    ``timeout_s`` after it: dead. Any frame (notification, heartbeat, pong) proves it alive."""

    def __init__(self, after_s: float, timeout_s: float, now: float) -> None:
        self.after_s = after_s
        self.timeout_s = timeout_s
        self._last = now          # the handshake counts as the first sign of life
        self._ping: float | None = None

    def inbound(self, now: float) -> None:
        self._last = now
        self._ping = None

    def ping_sent(self, now: float) -> None:
        self._ping = now

    def next(self, now: float) -> Tick:
        if self._ping is not None:
            dead_at = self._ping + self.timeout_s
            return Tick(Beat.DEAD, now) if now >= dead_at else Tick(Beat.WAIT, dead_at)
        ping_at = self._last + self.after_s
        return Tick(Beat.PING, now) if now >= ping_at else Tick(Beat.WAIT, ping_at)


@dataclass(frozen=True)
class Rollover:
    """§5: PUT the same list ``every_s`` after the last successful PUT (channels expire 24 h
    after the last subscription call; GET/HEAD extend nothing)."""

    every_s: float

    def due_in(self, last_put: float, now: float) -> float:
        return max(0.0, last_put + self.every_s - now)
