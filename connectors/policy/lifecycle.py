"""A source's lifecycle: its states and the transitions allowed between them. Pure.

Every source reports one of these states (the runner's exit rule, ``ccstream run``, metrics and
the breaker read them). The table is the contract of the lifecycle; a source moves through
``transition()``, which refuses a move the table does not allow (a defect, never a platform's
doing), and a unit test walks the table.

    STARTING ──► CONNECTING ──► STREAMING ──► WAITING ──► CONNECTING ...
                     │              │            ▲ │
                     └──────────────┴─► OPEN ────┘ └──► STREAMING (a poll answered after backoff)
    any live state ──► STOPPED (stop requested) | FAILED (a non-retriable answer)
    CONNECTING | STREAMING | WAITING ──► MAINTENANCE ──► CONNECTING | STREAMING
        (dropped inside a maintenance window: probes at the window's interval, no breaker)
"""

from __future__ import annotations

import enum


class SourceStatus(enum.Enum):
    STARTING = "starting"
    CONNECTING = "connecting"   # an attempt is being made (token, handshake, REST set-up)
    STREAMING = "streaming"     # records flow
    WAITING = "waiting"         # backing off before the next attempt
    OPEN = "open"               # the breaker is open
    MAINTENANCE = "maintenance"  # dropped inside a declared maintenance window: probing slowly
    STOPPED = "stopped"
    FAILED = "failed"           # a non-retriable error: the source's ``fatal`` says which


_S = SourceStatus
TRANSITIONS: dict[SourceStatus, frozenset[SourceStatus]] = {
    _S.STARTING: frozenset({_S.CONNECTING, _S.STOPPED, _S.FAILED}),
    _S.CONNECTING: frozenset({_S.STREAMING, _S.WAITING, _S.OPEN, _S.MAINTENANCE, _S.STOPPED,
                              _S.FAILED}),
    _S.STREAMING: frozenset({_S.WAITING, _S.OPEN, _S.MAINTENANCE, _S.STOPPED, _S.FAILED}),
    _S.WAITING: frozenset({_S.CONNECTING, _S.STREAMING, _S.OPEN, _S.MAINTENANCE, _S.STOPPED,
                           _S.FAILED}),
    _S.OPEN: frozenset({_S.CONNECTING, _S.STOPPED, _S.FAILED}),
    _S.MAINTENANCE: frozenset({_S.CONNECTING, _S.STREAMING, _S.STOPPED, _S.FAILED}),
    _S.STOPPED: frozenset(),
    _S.FAILED: frozenset(),
}


class TransitionError(ValueError):
    def __init__(self, current: SourceStatus, new: SourceStatus) -> None:
        super().__init__(f"a source cannot go from {current.value} to {new.value}")
        self.current = current
        self.new = new


def transition(current: SourceStatus, new: SourceStatus) -> SourceStatus:
    """``new`` if the table allows ``current -> new`` (staying put is always allowed)."""
    if new is not current and new not in TRANSITIONS[current]:
        raise TransitionError(current, new)
    return new


def live(status: SourceStatus) -> bool:
    """Neither stopped nor failed: the source may still deliver."""
    return bool(TRANSITIONS[status])
