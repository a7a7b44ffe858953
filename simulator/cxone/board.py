"""The CXone fault board, pure: which answer faults are armed and which one is due now.

The server asks "is a fault of this kind due for this request?" (``take``) and carries the
answer out; each answer fault is consumed ``count`` times, oldest first. Immediate faults never
reach the board (the server applies them when they are armed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.cxone.faults import IMMEDIATE, CxFault, CxFaultKind


@dataclass
class _Armed:
    fault: CxFault
    left: int


class CxBoard:
    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def arm(self, fault: CxFault) -> None:
        if fault.fault_kind in IMMEDIATE:
            raise ValueError(f"{fault.fault_kind.value} acts when injected, it is not armed")
        self._armed.append(_Armed(fault, fault.count))

    def take(self, kind: CxFaultKind, access_key: str | None, endpoint: str | None = None,
             step: str | None = None) -> CxFault | None:
        """The fault of ``kind`` due for this request, if any (consumed once).

        ``access_key`` None is a request that names no key (openid-configuration): any
        targeted fault matches it, since the server cannot tell whose it is."""
        for index, armed in enumerate(self._armed):
            fault = armed.fault
            if fault.kind is not kind:
                continue
            if access_key is not None and fault.access_key not in (None, access_key):
                continue
            if fault.endpoint not in (None, endpoint) or fault.step not in (None, step):
                continue
            armed.left -= 1
            if armed.left <= 0:
                del self._armed[index]
            return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        return [{**a.fault.to_dict(), "left": a.left} for a in self._armed]
