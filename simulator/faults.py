"""The fault catalogue: what the simulator can do wrong on purpose, scripts and presets, pure.

A fault is a small frozen record. *Connection* faults (``close``, ``closing_notice``, ``silent``,
``reset``, ``stall``, ``malformed``) are armed and fire on the first matching connection that
has sent ``after_events`` events (``connection`` = the client's Nth connection, counting from 1;
absent = any). *Answer* faults (``token_error``, ``handshake_error``) replace the next ``count``
matching answers. *Global* faults (``expire_token``, ``purge``, ``mass_disconnect``,
``maintenance``) act when injected. ``at_s`` delays arming by real seconds after start.

Scripts are TOML (``[[fault]]`` tables) or JSON (a list of objects) with the field names of
``Fault``; inline ``--fault kind=close,code=1013,retry_after=3`` uses the same names. Presets are
seeded schedules drawn from the menus below: the same seed gives the same faults at the same times,
and every preset fault is one a correct client survives without losing events.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Protocol

from simulator import scripts
from simulator.scripts import FaultScriptError

__all__ = ["FaultScriptError"]  # re-exported: the seed flavour's scripts raise it
from simulator.settings import PLATFORMS, Platform


class FaultKind(Enum):
    TOKEN_ERROR = "token_error"  # noqa: S105 (a fault name, not a password)
    HANDSHAKE_ERROR = "handshake_error"
    CLOSE = "close"
    CLOSING_NOTICE = "closing_notice"
    SILENT = "silent"
    RESET = "reset"
    STALL = "stall"
    MALFORMED = "malformed"
    EXPIRE_TOKEN = "expire_token"  # noqa: S105 (a fault name, not a password)
    PURGE = "purge"
    MASS_DISCONNECT = "mass_disconnect"
    MAINTENANCE = "maintenance"


CONNECTION_KINDS = frozenset({FaultKind.CLOSE, FaultKind.CLOSING_NOTICE, FaultKind.SILENT,
                              FaultKind.RESET, FaultKind.STALL, FaultKind.MALFORMED})
ANSWER_KINDS = frozenset({FaultKind.TOKEN_ERROR, FaultKind.HANDSHAKE_ERROR})
MALFORMED_VARIANTS = ("not_json", "not_object", "missing_field", "binary", "oversized",
                      "invalid_utf8")
CLOSE_CODES = (1000, 1001, 1008, 1011, 1012, 1013, 1014)
AUTH_REASONS = ("token_expired", "unauthorized")
TOKEN_STATUSES = (400, 401, 429, 500, 502, 503)
HANDSHAKE_STATUSES = (401, 403, 429, 503)
_TARGET = ("client", "platform", "at_s")

# kind -> (fields it accepts besides the target ones, one line of help)
CATALOGUE: dict[FaultKind, tuple[tuple[str, ...], str]] = {
    FaultKind.TOKEN_ERROR: (("status", "retry_after", "count"),
        "the next COUNT token requests answer STATUS: 400 invalid_grant (refresh grants only), "
        "401 invalid_client, 429 with Retry-After, 500/502/503"),
    FaultKind.HANDSHAKE_ERROR: (("status", "retry_after", "count"),
        "the next COUNT handshakes answer STATUS before the upgrade: 401, 403, 429 or 503 "
        "with Retry-After"),
    FaultKind.CLOSE: (("code", "reason", "retry_after", "connection", "after_events"),
        "close the connection with CODE (1000 1001 1008 1011 1012 1013 1014); 1000 with "
        "reason token_expired|unauthorized is the auth close; 1013 carries {retry_after}"),
    FaultKind.CLOSING_NOTICE: (("code", "delay_s", "connection", "after_events"),
        "send system.socket_closing, keep streaming, close with CODE (1001) after DELAY_S"),
    FaultKind.SILENT: (("duration_s", "connection", "after_events"),
        "silent drop: stop sending and stop answering pings, abort the TCP connection after "
        "DURATION_S (default: silent_hold_s)"),
    FaultKind.RESET: (("connection", "after_events"),
        "TCP reset: abort the connection with SO_LINGER 0, no close frame"),
    FaultKind.STALL: (("duration_s", "connection", "after_events"),
        "slow stream: send nothing for DURATION_S (pings still answered), then the backlog"),
    FaultKind.MALFORMED: (("variant", "count", "connection", "after_events"),
        "send COUNT bad frames of VARIANT: " + "|".join(MALFORMED_VARIANTS)
        + " (absent: one of each)"),
    FaultKind.EXPIRE_TOKEN: ((),
        "revoke the client's access tokens now: open connections close with 1008, reuse is 401"),
    FaultKind.PURGE: (("keep",),
        "retention drops all but the newest KEEP events now: the next resume point is older "
        "than retention (loses events: never in a preset)"),
    FaultKind.MASS_DISCONNECT: (("code",),
        "every open connection at once: closed with CODE, or TCP reset when CODE is absent"),
    FaultKind.MAINTENANCE: (("duration_s", "retry_after", "delay_s"),
        "maintenance window: closing notices, close 1012 after DELAY_S, handshakes answer 503 "
        "Retry-After until DURATION_S has passed"),
}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind | str
    client: str | None = None
    platform: Platform | None = None
    connection: int | None = None
    after_events: int = 0
    count: int = 1
    code: int | None = None
    reason: str | None = None
    retry_after: float | None = None
    status: int | None = None
    variant: str | None = None
    duration_s: float | None = None
    delay_s: float | None = None
    keep: int | None = None
    at_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):
            object.__setattr__(self, "kind", _kind(self.kind))
        _validate(self)

    @property
    def fault_kind(self) -> FaultKind:
        assert isinstance(self.kind, FaultKind)
        return self.kind

    def matches(self, client_id: str | None, platform: Platform | None) -> bool:
        return (self.client is None or self.client == client_id) and (
            self.platform is None or platform is None or self.platform == platform)

    def close_reason(self) -> bytes:
        """The close frame's reason: the contract's JSON payloads for auth closes and 1013."""
        if self.code == 1013 and self.retry_after is not None:
            return json.dumps({"retry_after": self.retry_after}).encode()
        if self.reason in AUTH_REASONS:
            return json.dumps({"error": self.reason}).encode()
        return (self.reason or "").encode()[:120]

    def to_dict(self) -> dict[str, Any]:
        return scripts.to_dict(self)


def _kind(name: str) -> FaultKind:
    try:
        return FaultKind(name)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise FaultScriptError("kind", f"unknown fault {name!r} (known: {known})") from None


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise FaultScriptError(key, problem)


def _validate(f: Fault) -> None:
    kind = f.fault_kind
    accepted = set(CATALOGUE[kind][0]) | set(_TARGET)
    for spec in fields(f)[1:]:
        if getattr(f, spec.name) != spec.default and spec.name not in accepted:
            raise FaultScriptError(spec.name, f"not a setting of {kind.value}")
    _check(f.platform is None or f.platform in PLATFORMS, "platform", "genesys or nice")
    _check(f.connection is None or f.connection >= 1, "connection", "counts from 1")
    _check(f.after_events >= 0 and f.count >= 1, "count", "after_events >= 0, count >= 1")
    for name in ("retry_after", "duration_s", "delay_s", "at_s"):
        value = getattr(f, name)
        _check(value is None or value >= 0, name, "must be >= 0 seconds")
    if kind is FaultKind.TOKEN_ERROR:
        _check(f.status in TOKEN_STATUSES, "status", f"one of {TOKEN_STATUSES}")
    elif kind is FaultKind.HANDSHAKE_ERROR:
        _check(f.status in HANDSHAKE_STATUSES, "status", f"one of {HANDSHAKE_STATUSES}")
    elif kind is FaultKind.CLOSE:
        _check(f.code in CLOSE_CODES, "code", f"one of {CLOSE_CODES}")
    elif kind in (FaultKind.CLOSING_NOTICE, FaultKind.MASS_DISCONNECT):
        _check(f.code is None or f.code in CLOSE_CODES, "code", f"one of {CLOSE_CODES}")
    elif kind is FaultKind.MALFORMED:
        _check(f.variant is None or f.variant in MALFORMED_VARIANTS, "variant",
               f"one of {', '.join(MALFORMED_VARIANTS)}")
    elif kind is FaultKind.STALL or kind is FaultKind.MAINTENANCE:
        _check(f.duration_s is not None, "duration_s", f"{kind.value} needs duration_s")
    elif kind is FaultKind.PURGE:
        _check(f.keep is None or f.keep >= 0, "keep", "must be >= 0")


_INT_FIELDS = {"connection", "after_events", "count", "code", "status", "keep"}
_FLOAT_FIELDS = {"retry_after", "duration_s", "delay_s", "at_s"}

SCHEMA = scripts.Schema(Fault, FaultScriptError, frozenset(_INT_FIELDS), frozenset(_FLOAT_FIELDS))


def parse_fault(data: Mapping[str, Any]) -> Fault:
    """A fault from a script entry (TOML table, JSON object or inline ``k=v,...``)."""
    fault: Fault = scripts.parse_entry(SCHEMA, data)
    return fault


def parse_inline(text: str) -> Fault:
    """``kind=...,key=value,...`` -> a fault."""
    fault: Fault = scripts.parse_inline(SCHEMA, text)
    return fault


def parse_script(text: str, source: str = "script") -> list[Fault]:
    """Faults from a JSON list of objects or a TOML document of ``[[fault]]`` tables."""
    return scripts.parse_script(SCHEMA, text, source)


# -- presets: seeded schedules ----------------------------------------------------------------

class Rng(Protocol):
    """The seeded random source a preset draws from (``random.Random``; pure: passed in)."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def expovariate(self, lambd: float) -> float: ...

    def choice(self, seq: Sequence[Any]) -> Any: ...


Menu = Sequence[Callable[[Rng], Fault]]


def _close(rng: Rng) -> Fault:
    code = rng.choice(CLOSE_CODES)
    if code == 1013:
        return Fault(FaultKind.CLOSE, code=code, retry_after=float(rng.randint(1, 3)))
    reason = rng.choice((*AUTH_REASONS, None)) if code == 1000 else None
    return Fault(FaultKind.CLOSE, code=code, reason=reason)


_NETWORK: Menu = (
    lambda r: Fault(FaultKind.SILENT, duration_s=10.0),
    lambda r: Fault(FaultKind.RESET),
    lambda r: Fault(FaultKind.STALL, duration_s=r.uniform(0.5, 3.0)),
    lambda r: Fault(FaultKind.CLOSING_NOTICE, delay_s=r.uniform(0.5, 3.0)),
    lambda r: Fault(FaultKind.MASS_DISCONNECT, code=r.choice((None, 1001, 1012))),
)
_AUTH: Menu = (
    lambda r: Fault(FaultKind.EXPIRE_TOKEN),
    lambda r: Fault(FaultKind.CLOSE, code=1008),
    lambda r: Fault(FaultKind.CLOSE, code=1000, reason=r.choice(AUTH_REASONS)),
    lambda r: Fault(FaultKind.HANDSHAKE_ERROR, status=401),
    lambda r: Fault(FaultKind.TOKEN_ERROR, status=r.choice((429, 500, 503)), retry_after=1.0),
    lambda r: Fault(FaultKind.TOKEN_ERROR, status=400),
)
_LIMITS: Menu = (
    lambda r: Fault(FaultKind.HANDSHAKE_ERROR, status=r.choice((429, 503)),
                    retry_after=float(r.randint(1, 3))),
    lambda r: Fault(FaultKind.CLOSE, code=1013, retry_after=float(r.randint(1, 3))),
    lambda r: Fault(FaultKind.MAINTENANCE, duration_s=r.uniform(2.0, 5.0), delay_s=1.0),
)


def _malformed(variant: str) -> Callable[[Rng], Fault]:
    return lambda r: Fault(FaultKind.MALFORMED, variant=variant, count=r.randint(1, 3))


_FRAMES: Menu = tuple(_malformed(v) for v in MALFORMED_VARIANTS)
PRESETS: dict[str, tuple[Menu, str]] = {
    "chaos": ((*_NETWORK, *_AUTH, *_LIMITS, *_FRAMES, _close),
              "everything below plus random close codes, mixed (the demo's preset)"),
    "network": (_NETWORK, "silent drops, TCP resets, stalls, closing notices, mass disconnects"),
    "auth": (_AUTH,
             "token revocation, 1008 and 1000-auth closes, handshake 401, token 429/5xx/400"),
    "limits": (_LIMITS, "handshake 429/503 with Retry-After, 1013 closes, maintenance windows"),
    "frames": (_FRAMES, "every malformed-frame variant, a few frames at a time"),
}


def preset_schedule(name: str, rng: Rng, clients: Sequence[str],
                    interval_s: float) -> Iterator[Fault]:
    """An endless schedule drawn from ``rng`` (seed it with the preset's name and the seed:
    the same seed gives the same faults): faults with increasing ``at_s``, mean spacing
    ``interval_s``."""
    return scripts.preset_schedule(PRESETS, name, rng, clients, interval_s,
                                   error=FaultScriptError)


def describe() -> str:
    """The catalogue and presets as plain text (``ccstream simulate --help``)."""
    lines = ["faults (--fault kind=...,key=value; --faults FILE.toml|FILE.json|PRESET):"]
    indent = " " * 19
    for kind, (accepted, text) in CATALOGUE.items():
        lines += textwrap.wrap(text, 96, initial_indent=f"  {kind.value:16} ",
                               subsequent_indent=indent)
        lines += textwrap.wrap(f"settings: {', '.join((*accepted, *_TARGET))}", 96,
                               initial_indent=indent, subsequent_indent=indent + "  ")
    lines += [
        "  every fault may name client=ID and platform=genesys|nice (absent: any) and",
        "  at_s=SECONDS (armed that long after start); connection=N is the client's Nth",
        "  connection (from 1), after_events=N waits until N events were sent on it, count=N",
        "  is how many connections/answers (malformed: frames) it hits. Script example:",
        '    [[fault]]  kind = "close"  code = 1013  retry_after = 3  after_events = 50',
    ]
    lines.append("presets (seeded by --seed, one fault every --preset-interval s on average):")
    lines.extend(f"  {name:16} {text}" for name, (_, text) in PRESETS.items())
    return "\n".join(lines)
