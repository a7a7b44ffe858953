"""The fault catalogue of the Genesys Cloud flavour (s.10), scripts and presets; pure.

A fault is a small frozen record with a ``kind`` and the settings that kind accepts. Targets:
``client`` (absent: any), ``at_s`` (armed that many real seconds after start). Groups:

- *answer* faults replace the next ``count`` matching answers: ``token_error``, ``rest_error``;
  ``analytics`` acts on the next ``count`` analytics pages (``lag`` acts at once);
- *socket* faults fire on the client's newest receiving socket (or its ``socket``-th, from 1)
  once ``after_notifications`` were sent on it: ``silent``, ``closing_notice``, ``idle_close``,
  ``reset`` (``count`` = sockets hit), ``pong_delay``, ``pong_drop`` (``count`` = pings),
  ``frames`` (``count`` = frames of the variant, or rounds of every variant);
- *channel* faults hit the named ``channel`` or the one with the newest socket:
  ``channel_gone``, ``replace``; ``deny_topics`` acts at once and stays.

Scripts are TOML (``[[fault]]`` tables) or JSON (a list of objects) with ``GcFault``'s field
names; inline ``kind=rest_error,status=429,path=/api/v2/notifications/*`` the same (``topics``
and ``permissions`` separated by ``|``). Presets draw from the menus below with a seeded random
source: the same seed, the same faults at the same times; every preset fault is one a correct
client survives without loss (never 401 ``invalid_client``, ``deny_topics``, 400/403).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from simulator import scripts
from simulator.genesys_cloud.model import Rng
from simulator.scripts import FaultScriptError

TOKEN_STATUSES = (401, 429, 500, 502, 503)
REST_STATUSES = (400, 401, 403, 404, 429, 500, 502, 503, 504)
FRAME_VARIANTS = ("unknown_topic", "extra_fields", "resend", "reorder", "not_json",
                  "not_object", "missing_field", "binary", "oversized", "invalid_utf8")
GONE_VARIANTS = ("expired", "evicted")
ANALYTICS_VARIANTS = ("drift", "insert", "lag", "page_429")
EXPIRES_IN = (300, 172_800)     # s.2: lifetime 300 s - 48 h
_TARGET = ("client", "at_s")
_SOCKET = ("socket", "after_notifications")

# kind -> (settings it accepts besides the targets, one line of help)
CATALOGUE: dict[str, tuple[tuple[str, ...], str]] = {
    "token_error": (("status", "expires_in", "retry_after", "count"),
        "the next COUNT token answers: STATUS 401 invalid_client, 429 + Retry-After, 500/502/503;"
        " or, without STATUS, a grant with EXPIRES_IN (300-172800 platform s)"),
    "rest_error": (("status", "path", "method", "retry_after", "count"),
        "the next COUNT REST calls on PATH (glob; absent: any) and METHOD: STATUS 429 "
        "(normalised body, Retry-After) or 5xx (presets); 400/401/403/404 in scripts"),
    "deny_topics": (("topics", "permissions"),
        "TOPICS (globs) lack permission from now on: 403 without ignoreErrors, Rejected with "
        "missingPermissions (PERMISSIONS) with it"),
    "silent": (("duration_s", *_SOCKET, "count"),
        "half-open: the socket sends no frame and no pong; TCP dropped after DURATION_S "
        "(default silent_hold_s)"),
    "pong_delay": (("delay_s", *_SOCKET, "count"), "the next COUNT pongs come DELAY_S late"),
    "pong_drop": ((*_SOCKET, "count"), "the next COUNT pings get no pong"),
    "frames": (("variant", *_SOCKET, "count"),
        "COUNT frames of VARIANT (absent: one of each): " + "|".join(FRAME_VARIANTS)),
    "closing_notice": (("delay_s", *_SOCKET, "count"),
        "v2.system.socket_closing, then 1001 after DELAY_S (default notice_s, 60 scaled)"),
    "idle_close": ((*_SOCKET, "count"), "close the socket with 1001 now"),
    "reset": ((*_SOCKET, "count"), "TCP reset, no close frame"),
    "channel_gone": (("variant", "channel"),
        "the channel expires or is evicted (VARIANT expired|evicted): 404 frame, close 1000; "
        "HEAD and subscription calls 404"),
    "replace": (("channel",), "a foreign socket takes the channel: the client's socket gets 4000"),
    "analytics": (("variant", "count", "items", "drift", "lag_s", "duration_s", "retry_after"),
        "the next COUNT analytics pages: drift (totalHits +-DRIFT), insert (ITEMS repeated), "
        "page_429 (Retry-After); lag: data lag LAG_S for DURATION_S (absent: insert + drift)"),
}
SOCKET_KINDS = frozenset({"silent", "pong_delay", "pong_drop", "frames", "closing_notice",
                          "idle_close", "reset"})
CHANNEL_KINDS = frozenset({"channel_gone", "replace"})
ANSWER_KINDS = frozenset({"token_error", "rest_error", "analytics"})


class GcFaultError(FaultScriptError):
    """A fault script or option of this flavour that cannot be used."""


@dataclass(frozen=True)
class GcFault:
    kind: str
    client: str | None = None
    at_s: float | None = None
    count: int = 1
    status: int | None = None
    retry_after: float | None = None
    expires_in: float | None = None
    path: str | None = None
    method: str | None = None
    topics: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    variant: str | None = None
    delay_s: float | None = None
    duration_s: float | None = None
    channel: str | None = None
    socket: int | None = None
    after_notifications: int = 0
    items: int | None = None
    drift: int | None = None
    lag_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("topics", "permissions"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, tuple(p for p in value.split("|") if p))
            elif isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        if self.method is not None:
            object.__setattr__(self, "method", self.method.upper())
        _validate(self)

    def matches(self, client_id: str | None) -> bool:
        return self.client is None or self.client == client_id

    def to_dict(self) -> dict[str, Any]:
        return scripts.to_dict(self)


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise GcFaultError(key, problem)


def _validate(f: GcFault) -> None:
    known = ", ".join(CATALOGUE)
    _check(f.kind in CATALOGUE, "kind", f"unknown fault {f.kind!r} (known: {known})")
    accepted = set(CATALOGUE[f.kind][0]) | set(_TARGET)
    for spec in fields(f)[1:]:
        if getattr(f, spec.name) != spec.default and spec.name not in accepted:
            raise GcFaultError(spec.name, f"not a setting of {f.kind}")
    _check(f.count >= 1 and f.after_notifications >= 0, "count",
           "count >= 1, after_notifications >= 0")
    _check(f.socket is None or f.socket >= 1, "socket", "counts from 1")
    for name in ("retry_after", "delay_s", "duration_s", "at_s", "lag_s"):
        value = getattr(f, name)
        _check(value is None or value >= 0, name, "must be >= 0 seconds")
    _check(f.items is None or f.items >= 1, "items", "must be >= 1")
    if f.kind == "token_error":
        _check(f.status is None or f.status in TOKEN_STATUSES, "status",
               f"one of {TOKEN_STATUSES}")
        _check((f.status is None) != (f.expires_in is None), "status",
               "give either status or expires_in")
        low, high = EXPIRES_IN
        _check(f.expires_in is None or low <= f.expires_in <= high, "expires_in",
               f"within {low}-{high} (platform seconds)")
    elif f.kind == "rest_error":
        _check(f.status in REST_STATUSES, "status", f"one of {REST_STATUSES}")
    elif f.kind == "deny_topics":
        _check(bool(f.topics), "topics", "deny_topics needs topics")
    elif f.kind == "pong_delay":
        _check(f.delay_s is not None, "delay_s", "pong_delay needs delay_s")
    elif f.kind == "frames":
        _check(f.variant is None or f.variant in FRAME_VARIANTS, "variant",
               f"one of {', '.join(FRAME_VARIANTS)}")
    elif f.kind == "channel_gone":
        _check(f.variant is None or f.variant in GONE_VARIANTS, "variant", "expired or evicted")
    elif f.kind == "analytics":
        _check(f.variant is None or f.variant in ANALYTICS_VARIANTS, "variant",
               f"one of {', '.join(ANALYTICS_VARIANTS)}")
        _check(f.variant != "lag" or f.lag_s is not None, "lag_s", "the lag variant needs lag_s")


_INT = {"count", "status", "socket", "after_notifications", "items", "drift"}
_FLOAT = {"at_s", "retry_after", "expires_in", "delay_s", "duration_s", "lag_s"}
_TUPLES = {"topics", "permissions"}

SCHEMA = scripts.Schema(GcFault, GcFaultError, frozenset(_INT), frozenset(_FLOAT),
                        frozenset(_TUPLES))


def parse_fault(data: Mapping[str, Any]) -> GcFault:
    """A fault from a script entry (TOML table, JSON object or inline ``k=v,...``)."""
    fault: GcFault = scripts.parse_entry(SCHEMA, data)
    return fault


def parse_inline(text: str) -> GcFault:
    """``kind=...,key=value,...`` -> a fault."""
    fault: GcFault = scripts.parse_inline(SCHEMA, text)
    return fault


def parse_script(text: str, source: str = "script") -> list[GcFault]:
    """Faults from a JSON list of objects or a TOML document of ``[[fault]]`` tables."""
    return scripts.parse_script(SCHEMA, text, source)


# -- presets: seeded schedules -----------------------------------------------------------------
Menu = Sequence[Callable[[Rng], GcFault]]
_PATHS = ("/api/v2/notifications/channels", "/api/v2/notifications/channels/*",
          "/api/v2/analytics/*", "/api/v2/routing/queues", "/api/v2/users", None)

_NETWORK: Menu = (
    lambda r: GcFault("silent", duration_s=round(r.uniform(2.0, 8.0), 3)),
    lambda r: GcFault("reset"),
    lambda r: GcFault("idle_close"),
    lambda r: GcFault("closing_notice", delay_s=round(r.uniform(0.5, 3.0), 3)),
    lambda r: GcFault("pong_delay", delay_s=round(r.uniform(0.1, 2.0), 3), count=r.randint(1, 3)),
    lambda r: GcFault("pong_drop"),
)
_CHANNELS: Menu = (
    lambda r: GcFault("channel_gone", variant=r.choice(GONE_VARIANTS)),
    lambda r: GcFault("replace"),
    lambda r: GcFault("closing_notice"),
)
_REST: Menu = (
    lambda r: GcFault("rest_error", status=429, path=r.choice(_PATHS),
                      retry_after=float(r.randint(1, 2))),
    lambda r: GcFault("rest_error", status=r.choice((500, 502, 503, 504)), path=r.choice(_PATHS)),
    lambda r: GcFault("token_error", status=r.choice((429, 500, 502, 503)), retry_after=1.0),
    lambda r: GcFault("token_error", expires_in=float(r.randint(300, 900))),
)
_ANALYTICS: Menu = (
    lambda r: GcFault("analytics", variant="drift", drift=r.randint(-5, 5) or 1,
                      count=r.randint(1, 3)),
    lambda r: GcFault("analytics", variant="insert", items=r.randint(1, 5)),
    lambda r: GcFault("analytics", variant="lag", lag_s=round(r.uniform(1.0, 5.0), 3),
                      duration_s=round(r.uniform(5.0, 20.0), 3)),
    lambda r: GcFault("analytics", variant="page_429", retry_after=float(r.randint(1, 2))),
)


def _frames(variant: str) -> Callable[[Rng], GcFault]:
    return lambda r: GcFault("frames", variant=variant, count=r.randint(1, 3))


_FRAMES: Menu = tuple(_frames(v) for v in FRAME_VARIANTS)
PRESETS: dict[str, tuple[Menu, str]] = {
    "chaos": ((*_NETWORK, *_CHANNELS, *_REST, *_ANALYTICS, *_FRAMES),
              "everything below, mixed (the demo's preset)"),
    "network": (_NETWORK, "half-open sockets, resets, idle closes, closing notices, late and "
                "lost pongs"),
    "channels": (_CHANNELS, "channels expired or evicted, sockets replaced, closing notices"),
    "rest": (_REST, "REST 429 (Retry-After) and 5xx on every path, token 429/5xx, short tokens"),
    "analytics": (_ANALYTICS, "totalHits drift, inserted (repeated) items, data lag, 429 pages"),
    "frames": (_FRAMES, "unknown topics, extra fields, resent and reordered notifications, "
               "malformed frames"),
}


def preset_schedule(name: str, rng: Rng, clients: Sequence[str],
                    interval_s: float) -> Iterator[GcFault]:
    """An endless schedule: faults with increasing ``at_s``, mean spacing ``interval_s``. Seed
    ``rng`` with the preset name and the simulator's seed (``random.Random(f"gc:{name}:{seed}")``)
    and the same seed gives the same faults at the same times."""
    return scripts.preset_schedule(PRESETS, name, rng, clients, interval_s,
                                   error=GcFaultError)


def describe() -> str:
    """The catalogue and presets as plain text (for ``--help``)."""
    lines = ["genesys-cloud faults (--fault kind=...,key=value; --faults FILE|PRESET):"]
    indent = " " * 19
    for kind, (accepted, text) in CATALOGUE.items():
        lines += textwrap.wrap(text, 96, initial_indent=f"  {kind:16} ", subsequent_indent=indent)
        lines += textwrap.wrap(f"settings: {', '.join((*accepted, *_TARGET))}", 96,
                               initial_indent=indent, subsequent_indent=indent + "  ")
    lines.append("presets (seeded by --seed, one fault every --gc-preset-interval s on average):")
    lines.extend(f"  {name:16} {text}" for name, (_, text) in PRESETS.items())
    return "\n".join(lines)
