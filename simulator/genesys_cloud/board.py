"""The fault board, pure: which faults are armed and which one is due for a request or socket.

No clock and no I/O: the server asks "is an answer fault due for this call?", "which socket and
channel faults are waiting?", "is this topic denied?", and carries the answers out.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from simulator.genesys_cloud.faults import CHANNEL_KINDS, SOCKET_KINDS, GcFault


@dataclass(eq=False)
class Armed:
    fault: GcFault
    left: int


def _hits(fault: GcFault) -> int:
    # these count pings or frames on one socket, not sockets
    return 1 if fault.kind in ("pong_delay", "pong_drop", "frames") else fault.count


class GcFaultBoard:
    def __init__(self) -> None:
        self._answers: list[Armed] = []
        self._sockets: list[Armed] = []
        self._channels: list[Armed] = []
        self._denied: list[GcFault] = []

    def arm(self, fault: GcFault) -> None:
        if fault.kind == "deny_topics":
            self._denied.append(fault)
        elif fault.kind in SOCKET_KINDS:
            self._sockets.append(Armed(fault, _hits(fault)))
        elif fault.kind in CHANNEL_KINDS:
            self._channels.append(Armed(fault, fault.count))
        else:
            self._answers.append(Armed(fault, fault.count))

    def _take(self, kind: str, client_id: str | None, method: str = "",
              path: str = "") -> GcFault | None:
        for armed in self._answers:
            fault = armed.fault
            if fault.kind != kind or not fault.matches(client_id):
                continue
            if fault.method is not None and fault.method != method:
                continue
            if fault.path is not None and not fnmatchcase(path, fault.path):
                continue
            self.consume(armed)
            return fault
        return None

    def take_token(self, client_id: str | None) -> GcFault | None:
        return self._take("token_error", client_id)

    def take_rest(self, client_id: str, method: str, path: str) -> GcFault | None:
        return self._take("rest_error", client_id, method, path)

    def take_analytics(self, client_id: str) -> GcFault | None:
        return self._take("analytics", client_id)

    def socket_faults(self) -> list[Armed]:
        return list(self._sockets)

    def channel_faults(self) -> list[Armed]:
        return list(self._channels)

    def consume(self, armed: Armed) -> None:
        armed.left -= 1
        if armed.left <= 0:
            for pool in (self._answers, self._sockets, self._channels):
                if armed in pool:
                    pool.remove(armed)

    def denied(self, client_id: str, topic: str) -> tuple[str, ...] | None:
        """The permissions a single topic name lacks for this client, or None if allowed."""
        for fault in self._denied:
            if fault.matches(client_id) and any(fnmatchcase(topic, p) for p in fault.topics):
                return fault.permissions
        return None

    @property
    def armed(self) -> bool:
        return bool(self._sockets or self._channels)

    def pending(self) -> list[dict[str, Any]]:
        return [a.fault.to_dict() for a in (*self._answers, *self._sockets, *self._channels)]

    def denials(self) -> list[dict[str, Any]]:
        return [f.to_dict() for f in self._denied]
