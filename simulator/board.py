"""The fault board, pure: which faults are armed, which answer is due, which promises were made.

No asyncio and no clock of its own: ``now`` (the event loop's monotonic time) is a parameter. The
simulator asks it "which fault is due on this connection / for this request?" and tells it
"I answered Retry-After N to this client", then carries the answers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from simulator.faults import ANSWER_KINDS, Fault, FaultKind
from simulator.settings import Platform

UNKNOWN_CLIENT = "(unknown)"
# a retry landing this close to the promised time is on time: timer granularity, not behaviour
EARLY_TOLERANCE_S = 0.005


@dataclass
class _Armed:
    fault: Fault
    left: int


@dataclass
class _Window:
    until: float
    retry_after: float
    fault: Fault


class FaultBoard:
    def __init__(self) -> None:
        self._armed: list[_Armed] = []      # connection faults
        self._answers: list[_Armed] = []    # token and handshake answers
        self._windows: list[_Window] = []   # maintenance windows
        self._not_before: dict[tuple[str, str], float] = {}

    def arm(self, fault: Fault) -> None:
        """Arm a connection fault, or an answer fault for the next ``count`` requests."""
        if fault.fault_kind in ANSWER_KINDS:
            self._answers.append(_Armed(fault, fault.count))
        else:
            # a malformed fault's count is frames, sent in one go on one connection
            left = 1 if fault.fault_kind is FaultKind.MALFORMED else fault.count
            self._armed.append(_Armed(fault, left))

    @property
    def armed(self) -> bool:
        return bool(self._armed)

    def take_connection(self, client_id: str, platform: Platform, number: int,
                        events_sent: int) -> Fault | None:
        """The connection fault due on this connection now, if any (consumed)."""
        for index, armed in enumerate(self._armed):
            fault = armed.fault
            if (fault.matches(client_id, platform) and fault.connection in (None, number)
                    and events_sent >= fault.after_events):
                armed.left -= 1
                if armed.left <= 0:
                    del self._armed[index]
                return fault
        return None

    def take_answer(self, kind: FaultKind, client_id: str | None, platform: Platform | None,
                    refresh: bool = False) -> Fault | None:
        """The scripted answer due for this request, if any (consumed)."""
        for index, armed in enumerate(self._answers):
            fault = armed.fault
            if fault.kind is not kind or not fault.matches(client_id, platform):
                continue
            if fault.status == 400 and not refresh:
                continue  # invalid_grant only answers a refresh grant
            armed.left -= 1
            if armed.left <= 0:
                del self._answers[index]
            return fault
        return None

    def open_window(self, fault: Fault, now: float) -> None:
        duration = fault.duration_s or 0.0
        retry = fault.retry_after if fault.retry_after is not None else duration
        self._windows.append(_Window(now + duration, retry, fault))

    def maintenance(self, client_id: str | None, platform: Platform, now: float) -> float | None:
        """Seconds to announce in Retry-After if a maintenance window is open for this client."""
        self._windows = [w for w in self._windows if w.until > now]
        for window in self._windows:
            if window.fault.matches(client_id, platform):
                remaining = window.until - now
                # an explicit retry_after shifts the announced time by the same amount
                extra = window.retry_after - (window.fault.duration_s or 0.0)
                return max(remaining + extra, 1.0)
        return None

    def promise(self, client_id: str | None, surface: str, seconds: float, now: float) -> int:
        """Record a Retry-After given out on ``surface``; the whole seconds announced."""
        whole = max(1, math.ceil(seconds))
        self._not_before[client_id or UNKNOWN_CLIENT, surface] = now + whole
        return whole

    def promise_exact(self, client_id: str, surface: str, seconds: float, now: float) -> None:
        """Record a delay given as a number (1013 ``{"retry_after": s}``), not rounded."""
        self._not_before[client_id, surface] = now + seconds

    def early(self, client_id: str | None, surface: str, now: float) -> bool:
        """Whether an attempt now comes before a Retry-After given to this client elapsed."""
        not_before = self._not_before.get((client_id or UNKNOWN_CLIENT, surface))
        return not_before is not None and now < not_before - EARLY_TOLERANCE_S

    def pending(self) -> list[dict[str, Any]]:
        return [a.fault.to_dict() for a in (*self._armed, *self._answers)]
