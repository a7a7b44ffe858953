"""The CXone fault catalogue (contract s.8), scripts and presets, pure.

A fault is a small frozen record aimed at one access key (``access_key``; absent = any) and
armed now or ``at_s`` real seconds after start. *Answer* faults replace or alter the next
``count`` matching answers (``endpoint`` narrows API faults to one endpoint, ``step`` narrows
discovery_error to one discovery step); *immediate* faults act once when armed. Scripts are
JSON (a list of objects) or TOML (``[[fault]]`` tables); inline ``kind=stall,duration_s=12``
uses the same names. Presets are seeded schedules (the random source is passed in): the same
seed gives the same faults at the same times, and every preset fault is one a client that
follows the contract survives without loss (no fatal 400/401 token answers in a preset).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from simulator import scripts
from simulator.cxone.values import API_ENDPOINTS, Rng
from simulator.scripts import FaultScriptError


class CxFaultKind(Enum):
    DISCOVERY_ERROR = "discovery_error"
    AREA_MOVE = "area_move"
    TOKEN_ERROR = "token_error"  # noqa: S105 (a fault name, not a password)
    EXPIRE_TOKEN = "expire_token"  # noqa: S105 (a fault name, not a password)
    CLOCK_SKEW = "clock_skew"
    REPEAT_ROWS = "repeat_rows"
    COLLAPSE = "collapse"
    REST_ERROR = "rest_error"
    STALL = "stall"
    TRUNCATE = "truncate"
    COMPLETED_SHIFT = "completed_shift"


IMMEDIATE = frozenset({CxFaultKind.AREA_MOVE, CxFaultKind.EXPIRE_TOKEN, CxFaultKind.CLOCK_SKEW,
                       CxFaultKind.COLLAPSE})
DISCOVERY_STEPS = ("openid", "configuration")
DISCOVERY_STATUSES = (500, 502, 503)
TOKEN_STATUSES = (400, 401, 429, 500, 502, 503)
REST_STATUSES = (429, 500, 502, 503, 504)
_TARGET = ("access_key", "at_s")

CATALOGUE: dict[CxFaultKind, tuple[tuple[str, ...], str]] = {
    CxFaultKind.DISCOVERY_ERROR: (("status", "step", "count"),
        "the next COUNT discovery answers (STEP openid|configuration, absent: both) are STATUS "
        "(500/502/503, default 503); openid carries no key, so any client's counts"),
    CxFaultKind.AREA_MOVE: (("status", "area"),
        "cxone-configuration answers a new api_endpoint (area AREA, default the next one); "
        "from now on the old base answers STATUS (401 default, or 404)"),
    CxFaultKind.TOKEN_ERROR: (("status", "retry_after", "expires_in", "exp_s", "count"),
        "the next COUNT token answers: STATUS 400 invalid_grant, 401 invalid_client, 429 "
        "(Retry-After RETRY_AFTER), 500/502/503; or, without STATUS, a grant whose expires_in "
        "(EXPIRES_IN) or exp - iat (EXP_S) is shortened to that many platform seconds"),
    CxFaultKind.EXPIRE_TOKEN: ((),
        "the key's current tokens expire now: the next API call gets 401"),
    CxFaultKind.CLOCK_SKEW: (("skew_s",),
        "the server clock is offset by SKEW_S s from now on (lastPollTime, Date, iat/exp, row "
        "times); it never runs backwards: a step back holds it until real time catches up; "
        "one clock for the whole server, whatever access_key says"),
    CxFaultKind.REPEAT_ROWS: (("rows", "endpoint", "count"),
        "the next COUNT polls also carry ROWS (3) unchanged rows older than updatedSince"),
    CxFaultKind.COLLAPSE: (("rows", "transitions"),
        "now: ROWS (2) agents each go through TRANSITIONS (3) states at once; only the last "
        "is served"),
    CxFaultKind.REST_ERROR: (("status", "retry_after", "endpoint", "count"),
        "the next COUNT API answers are STATUS: 429 (Retry-After RETRY_AFTER s if given) or "
        "500/502/503/504"),
    CxFaultKind.STALL: (("duration_s", "endpoint", "count"),
        "the next COUNT API answers are held DURATION_S real seconds (default stall_s = 15, "
        "past the client's open_timeout_s), then sent if the connection is still open"),
    CxFaultKind.TRUNCATE: (("endpoint", "count"),
        "the next COUNT polls are treated as older than retention: full snapshot + "
        "X-Data-Truncated: true"),
    CxFaultKind.COMPLETED_SHIFT: (("rows", "count"),
        "after each of the next COUNT contacts/completed pages, ROWS (3) rows of that page are "
        "listed once more: later pages shift, rows repeat, none is removed"),
}


class CxFaultError(FaultScriptError):
    """A fault script or option of this flavour that cannot be used."""


@dataclass(frozen=True)
class CxFault:
    kind: CxFaultKind | str
    access_key: str | None = None
    at_s: float | None = None
    count: int = 1
    status: int | None = None
    retry_after: float | None = None
    duration_s: float | None = None
    endpoint: str | None = None
    step: str | None = None
    skew_s: float | None = None
    expires_in: float | None = None
    exp_s: float | None = None
    area: str | None = None
    rows: int | None = None
    transitions: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):
            object.__setattr__(self, "kind", _kind(self.kind))
        _validate(self)

    @property
    def fault_kind(self) -> CxFaultKind:
        assert isinstance(self.kind, CxFaultKind)
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return scripts.to_dict(self)


def _kind(name: str) -> CxFaultKind:
    try:
        return CxFaultKind(name)
    except ValueError:
        known = ", ".join(k.value for k in CxFaultKind)
        raise CxFaultError("kind", f"unknown fault {name!r} (known: {known})") from None


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise CxFaultError(key, problem)


def _validate(f: CxFault) -> None:
    kind = f.fault_kind
    accepted = set(CATALOGUE[kind][0]) | set(_TARGET)
    for spec in fields(f)[1:]:
        if getattr(f, spec.name) != spec.default and spec.name not in accepted:
            raise CxFaultError(spec.name, f"not a setting of {kind.value}")
    _check(f.count >= 1, "count", "must be >= 1")
    for name in ("retry_after", "duration_s", "at_s"):
        value = getattr(f, name)
        _check(value is None or value >= 0, name, "must be >= 0 seconds")
    for name in ("expires_in", "exp_s"):
        value = getattr(f, name)
        _check(value is None or value > 0, name, "must be > 0 seconds")
    for name in ("rows", "transitions"):
        value = getattr(f, name)
        _check(value is None or value >= 1, name, "must be >= 1")
    _check(f.endpoint is None or f.endpoint in API_ENDPOINTS, "endpoint",
           f"one of {', '.join(API_ENDPOINTS)}")
    _check(f.step is None or f.step in DISCOVERY_STEPS, "step", "openid or configuration")
    if kind is CxFaultKind.DISCOVERY_ERROR:
        _check(f.status is None or f.status in DISCOVERY_STATUSES, "status",
               f"one of {DISCOVERY_STATUSES}")
    elif kind is CxFaultKind.AREA_MOVE:
        _check(f.status in (None, 401, 404), "status", "401 or 404")
    elif kind is CxFaultKind.TOKEN_ERROR:
        _check(f.status is None or f.status in TOKEN_STATUSES, "status",
               f"one of {TOKEN_STATUSES}")
        _check(f.status is not None or f.expires_in is not None or f.exp_s is not None,
               "status", "token_error needs status, expires_in or exp_s")
    elif kind is CxFaultKind.REST_ERROR:
        _check(f.status in REST_STATUSES, "status", f"one of {REST_STATUSES}")
    elif kind is CxFaultKind.CLOCK_SKEW:
        _check(f.skew_s is not None, "skew_s", "clock_skew needs skew_s")


_INT_FIELDS = {"count", "status", "rows", "transitions"}
_FLOAT_FIELDS = {"at_s", "retry_after", "duration_s", "skew_s", "expires_in", "exp_s"}

SCHEMA = scripts.Schema(CxFault, CxFaultError, frozenset(_INT_FIELDS), frozenset(_FLOAT_FIELDS))


def parse_fault(data: Mapping[str, Any]) -> CxFault:
    """A fault from a script entry (TOML table, JSON object or inline ``k=v,...``)."""
    fault: CxFault = scripts.parse_entry(SCHEMA, data)
    return fault


def parse_inline(text: str) -> CxFault:
    """``kind=...,key=value,...`` -> a fault."""
    fault: CxFault = scripts.parse_inline(SCHEMA, text)
    return fault


def parse_script(text: str, source: str = "script") -> list[CxFault]:
    """Faults from a JSON list of objects or a TOML document of ``[[fault]]`` tables."""
    return scripts.parse_script(SCHEMA, text, source)


# -- presets: seeded schedules ----------------------------------------------------------------
Menu = Sequence[Callable[[Rng], CxFault]]
K = CxFaultKind

_AUTH: Menu = (
    lambda r: CxFault(K.EXPIRE_TOKEN),
    lambda r: CxFault(K.TOKEN_ERROR, status=429, retry_after=float(r.randint(1, 2))),
    lambda r: CxFault(K.TOKEN_ERROR, status=r.choice((500, 502, 503)), count=r.randint(1, 2)),
    lambda r: CxFault(K.TOKEN_ERROR, expires_in=float(r.choice((600, 900, 1200)))),
    lambda r: CxFault(K.TOKEN_ERROR, exp_s=float(r.choice((600, 900, 1200)))),
)
_NETWORK: Menu = (
    lambda r: CxFault(K.DISCOVERY_ERROR, status=r.choice(DISCOVERY_STATUSES),
                      count=r.randint(1, 3)),
    lambda r: CxFault(K.AREA_MOVE, status=r.choice((401, 404))),
    lambda r: CxFault(K.REST_ERROR, status=429, retry_after=float(r.randint(1, 3)),
                      count=r.randint(1, 3)),
    lambda r: CxFault(K.REST_ERROR, status=429, count=r.randint(1, 2)),
    lambda r: CxFault(K.REST_ERROR, status=r.choice((500, 502, 503, 504)),
                      count=r.randint(1, 3)),
    lambda r: CxFault(K.STALL),
)
_DATA: Menu = (
    lambda r: CxFault(K.REPEAT_ROWS, rows=r.randint(1, 5), count=r.randint(1, 3)),
    lambda r: CxFault(K.COLLAPSE, rows=r.randint(1, 3), transitions=r.randint(2, 4)),
    lambda r: CxFault(K.TRUNCATE, endpoint=r.choice((None, "agents/states", "contacts/active",
                                                     "skills/activity"))),
    lambda r: CxFault(K.COMPLETED_SHIFT, rows=r.randint(1, 5), count=r.randint(1, 3)),
    # small steps only (at most 1 s between two of them, the judge's tolerance): a jump of the
    # server clock lengthens, on that clock, the interval it jumps over
    lambda r: CxFault(K.CLOCK_SKEW, skew_s=round(r.uniform(-0.5, 0.5), 3)),
)
PRESETS: dict[str, tuple[Menu, str]] = {
    "chaos": ((*_AUTH, *_NETWORK, *_DATA), "everything below, mixed (the demo's preset)"),
    "auth": (_AUTH, "expire_token; token 429/5xx; grants with a shortened expires_in or exp"),
    "network": (_NETWORK, "discovery 5xx, area_move 401/404, API 429 (with and without "
                "Retry-After) and 5xx, stalls"),
    "data": (_DATA, "repeated rows, collapsed transitions, truncation, completed_shift, small "
             "clock steps"),
}


def preset_schedule(name: str, rng: Rng, access_keys: Sequence[str],
                    interval_s: float) -> Iterator[CxFault]:
    """An endless seeded schedule: faults with increasing ``at_s``, mean spacing ``interval_s``."""
    return scripts.preset_schedule(PRESETS, name, rng, access_keys, interval_s,
                                   error=CxFaultError, target="access_key")


def describe() -> str:
    """The catalogue and presets as plain text (for ``--help``)."""
    lines = ["cxone faults (--fault kind=...,key=value; --faults FILE.toml|FILE.json|PRESET):"]
    indent = " " * 19
    for kind, (accepted, text) in CATALOGUE.items():
        lines += textwrap.wrap(text, 96, initial_indent=f"  {kind.value:16} ",
                               subsequent_indent=indent)
        lines += textwrap.wrap(f"settings: {', '.join((*accepted, *_TARGET))}", 96,
                               initial_indent=indent, subsequent_indent=indent + "  ")
    lines += ["  every fault may name access_key=ID (absent: any) and at_s=SECONDS (armed that",
              "  long after start); endpoint= is one of " + ", ".join(API_ENDPOINTS) + ".",
              "cxone presets (seeded by --seed, one fault every --cxone-preset-interval s):"]
    lines.extend(f"  {name:16} {text}" for name, (_, text) in PRESETS.items())
    return "\n".join(lines)
