"""CXone rows into records, and the answers they come in, read. Pure: values in, values out.

docs/cxone.md §3 and §4 (the contract): one raw record per row, the row's JSON object as the value
(compared by JSON equality, so a compact re-serialisation is the value), keyed by the row's id,
with ``ccstream-dedup-key`` = ``eventType|correlationId|timestamp``:

=====================  ===============  ===========================  ==========================
source                 key              eventType                    timestamp
=====================  ===============  ===========================  ==========================
``agents/states``      ``agentId``      ``cxone.agent_state``        row ``lastUpdateTime``
``contacts/active``    ``contactId``    ``cxone.contact``            row ``lastUpdateTime``
``skills/activity``    ``skillId``      ``cxone.skill_activity``     the answer's lastPollTime
``contacts/completed`` ``contactId``    ``cxone.completed_contact``  row ``lastUpdateTime``
=====================  ===============  ===========================  ==========================

An id that is a JSON string is taken as is, an integer in decimal (real rows carry integers);
``contactID`` stands in when ``contactId`` is absent (older API versions). A row without its key
is bad input (DLQ ``missing_field``). A missing or non-string time is h(row): the first 16 hex
characters of sha256 over the canonical JSON (``genesys-cloud.md`` §8's h).

§3: the client reads ``resultSet.X`` first, then a top-level ``X``, for both the rows and
``lastPollTime`` (real CXone puts the skills' ``lastPollTime`` at the top level).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from ccstream.records import dedup_key
from ccstream.timefmt import parse_rfc3339

AGENTS = "agents/states"
CONTACTS = "contacts/active"
SKILLS = "skills/activity"
COMPLETED = "contacts/completed"

EVENT_TYPES = {AGENTS: "cxone.agent_state", CONTACTS: "cxone.contact",
               SKILLS: "cxone.skill_activity", COMPLETED: "cxone.completed_contact"}
KEY_FIELDS = {AGENTS: "agentId", CONTACTS: "contactId", SKILLS: "skillId",
              COMPLETED: "contactId"}
# §4: older API versions spell it contactID; taken only when contactId is absent
ALIASES = {"contactId": "contactID"}
ROW_LISTS = {AGENTS: "agentStates", CONTACTS: "activeContacts", SKILLS: "skillActivity",
             COMPLETED: "completedContacts"}
TIME_FIELD = "lastUpdateTime"


def canonical(value: Any) -> bytes:
    """The judge's canonical JSON (``genesys-cloud.md`` §8), byte for byte."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def h(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()[:16]


def id_text(value: object) -> str | None:
    """§4: a non-empty JSON string as is, an integer in decimal; anything else is no id."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def server_epoch(text: object) -> float | None:
    """Epoch seconds of a server time (ISO 8601; one without an offset is UTC, the server's)."""
    epoch = parse_rfc3339(text)
    if epoch is not None or not isinstance(text, str):
        return epoch
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class RowRecord:
    correlation_id: str
    dedup_key: str
    raw: bytes


@dataclass(frozen=True)
class RowProblem:
    reason: str      # the DLQ reason
    raw: bytes


def _raw(row: Any) -> bytes:
    try:
        return orjson.dumps(row)
    except TypeError:  # an integer beyond 64 bits: the standard library writes it
        return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


def _key(row: dict[str, Any], source: str) -> tuple[str, str | None]:
    field = KEY_FIELDS[source]
    alias = ALIASES.get(field)
    if row.get(field) is None and alias is not None and alias in row:
        return alias, id_text(row[alias])
    return field, id_text(row.get(field))


def record_of(source: str, row: Any, poll_time: str | None) -> RowRecord | RowProblem:
    """One row of ``source`` (an endpoint, or ``contacts/completed``) as its record (§4)."""
    raw = _raw(row)
    if not isinstance(row, dict):
        return RowProblem("not_an_object: a row must be a JSON object", raw)
    field, key = _key(row, source)
    if key is None:
        return RowProblem(f"missing_field: {field}", raw)
    stamp = poll_time if source == SKILLS else row.get(TIME_FIELD)
    timestamp = stamp if isinstance(stamp, str) and stamp else h(row)
    return RowRecord(key, dedup_key(EVENT_TYPES[source], key, timestamp), raw)


@dataclass(frozen=True)
class PageBody:
    """What an answer's body holds: its rows, ``lastPollTime``, or why it is unusable."""

    rows: tuple[Any, ...] = ()
    poll_time: str | None = None
    problem: str = ""


def _field(body: dict[str, Any], name: str) -> Any:
    """§3: ``resultSet.X`` first, then a top-level ``X``."""
    result = body.get("resultSet")
    if isinstance(result, dict) and result.get(name) is not None:
        return result[name]
    return body.get(name)


def read_body(source: str, body: Any) -> PageBody:
    """A 200's decoded JSON body. An absent list is no rows; a list that is not one is bad."""
    if not isinstance(body, dict):
        return PageBody(problem="not_an_object: the answer must be a JSON object")
    name = ROW_LISTS[source]
    rows = _field(body, name)
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        return PageBody(problem=f"missing_field: {name} is not a list")
    poll_time = _field(body, "lastPollTime")
    # §3: an unreadable lastPollTime is no lastPollTime (sending it back would fail every poll)
    usable = isinstance(poll_time, str) and server_epoch(poll_time) is not None
    return PageBody(tuple(rows), poll_time if usable else None)
