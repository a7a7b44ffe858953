"""Values the pure modules share: ISO 8601 ms times on integer milliseconds, canonical JSON and
its digest, the endpoint names, and the shape of the random source (passed in, never imported).

Times inside the model are integer epoch milliseconds of the *server clock* (skew included), so
that "strictly increasing per row" and the inclusive ``updatedSince`` boundary are exact: no
float rounding decides whether a row is at or after a boundary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

AGENTS = "agents/states"
CONTACTS = "contacts/active"
SKILLS = "skills/activity"
COMPLETED = "contacts/completed"
POLL_ENDPOINTS: tuple[str, ...] = (AGENTS, CONTACTS, SKILLS)
API_ENDPOINTS: tuple[str, ...] = (*POLL_ENDPOINTS, COMPLETED)
# contract s.3: the list's name inside resultSet, and the row's key field
RESULT_LIST = {AGENTS: "agentStates", CONTACTS: "activeContacts", SKILLS: "skillActivity"}
KEY_FIELD = {AGENTS: "agentId", CONTACTS: "contactId", SKILLS: "skillId", COMPLETED: "contactId"}


class Rng(Protocol):
    """The part of ``random.Random`` the pure modules use (the driver passes a seeded one)."""

    def random(self) -> float: ...
    def randint(self, a: int, b: int) -> int: ...
    def uniform(self, a: float, b: float) -> float: ...
    def choice(self, seq: Sequence[_T]) -> _T: ...
    def expovariate(self, lambd: float) -> float: ...
    def getrandbits(self, k: int, /) -> int: ...


def iso_ms(ms: int) -> str:
    """``2024-01-15T10:30:00.123Z`` for epoch milliseconds (the wire form of every time)."""
    return (EPOCH + ms * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso_ms(text: str) -> int | None:
    """Epoch ms (floored) of an ISO 8601 time; no offset = UTC; None if unreadable.

    A ``+`` decoded as a space by a form-style query parser is put back (``+00:00``)."""
    text = text.strip().replace(" ", "+")
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MS


def canonical(value: Any) -> bytes:
    """The canonical JSON of the judge: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(value: Any) -> str:
    """sha256 (hex) of the canonical JSON: what ``/_sim/ledger`` lists per row version."""
    return hashlib.sha256(canonical(value)).hexdigest()
