"""Fault scripts, shared by every simulator flavour: one parser, one error. Pure.

A fault is a frozen dataclass whose first field is ``kind``; a script is a JSON list of objects
or a TOML document of ``[[fault]]`` tables; an inline fault is ``kind=close,code=1013,...``.
Each flavour describes its fault class once (``Schema``: which settings are integers, seconds
or lists of text) and validates its own settings in the dataclass; the reading, coercion and
error messages (which entry, which setting) are the same for all of them.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any


class FaultScriptError(ValueError):
    """A fault script or option that cannot be used; ``where`` says which entry."""

    retriable = False

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


@dataclass(frozen=True)
class Schema:
    fault: type                          # the flavour's fault dataclass (first field: kind)
    error: type[FaultScriptError]        # the flavour's error class
    ints: frozenset[str]
    floats: frozenset[str]
    texts: frozenset[str] = frozenset()  # lists of text (a string alone is kept as is)


def coerce(schema: Schema, name: str, value: Any) -> Any:
    """A setting's value as its field wants it (from TOML, JSON or inline text)."""
    if name in schema.texts:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise schema.error(name, f"must be a list of text, not {value!r}")
    try:
        if name in schema.ints:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if name in schema.floats:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
    except (TypeError, ValueError):
        what = "an integer" if name in schema.ints else "a number of seconds"
        raise schema.error(name, f"must be {what}, not {value!r}") from None
    if not isinstance(value, str):
        raise schema.error(name, f"must be text, not {value!r}")
    return value


def parse_entry(schema: Schema, data: Mapping[str, Any]) -> Any:
    """A fault from one script entry; the dataclass validates its own settings."""
    if not isinstance(data, Mapping):
        raise schema.error("", f"a fault is a table of settings, not {data!r}")
    if "kind" not in data:
        raise schema.error("kind", "missing")
    if not isinstance(data["kind"], str):
        raise schema.error("kind", f"must be text, not {data['kind']!r}")
    unknown = sorted(set(data) - {f.name for f in fields(schema.fault)})
    if unknown:
        raise schema.error(unknown[0], "unknown setting")
    values = {k: coerce(schema, k, v) for k, v in data.items() if k != "kind"}
    return schema.fault(kind=data["kind"], **values)


def parse_inline(schema: Schema, text: str) -> Any:
    """``kind=close,code=1013,retry_after=3`` -> a fault."""
    data: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise schema.error(item, "expected key=value")
        data[key.strip()] = value.strip()
    return parse_entry(schema, data)


def parse_script(schema: Schema, text: str, source: str = "script") -> list[Any]:
    """Faults from a JSON list of objects or a TOML document of ``[[fault]]`` tables."""
    entries: Any = None
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as err:
            if not text.lstrip().startswith("[["):  # not TOML either: say why JSON failed
                raise schema.error(source, f"not valid JSON: {err}") from None
    if entries is None:
        try:
            entries = tomllib.loads(text).get("fault")
        except tomllib.TOMLDecodeError as err:
            raise schema.error(source, f"not valid TOML: {err}") from None
        if entries is None:
            raise schema.error(source, "no [[fault]] tables")
    if not isinstance(entries, list):
        raise schema.error(source, "expected a list of faults")
    out = []
    for index, entry in enumerate(entries):
        try:
            out.append(parse_entry(schema, entry))
        except schema.error as err:
            raise schema.error(f"{source}: fault[{index}].{err.where}".rstrip("."),
                               err.problem) from None
    return out


def to_dict(fault: Any) -> dict[str, Any]:
    """A fault as a script entry: its kind and every setting that is not the default."""
    kind = fault.kind
    out: dict[str, Any] = {"kind": getattr(kind, "value", kind)}
    for f in fields(fault)[1:]:
        value = getattr(fault, f.name)
        if value != f.default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def preset_schedule(presets: Mapping[str, tuple[Sequence[Callable[[Any], Any]], str]],
                    name: str, rng: Any, targets: Sequence[str], interval_s: float, *,
                    error: type[FaultScriptError], target: str = "client") -> Iterator[Any]:
    """An endless schedule from the preset ``name``, drawn from ``rng`` (seeded by the caller:
    the same seed gives the same faults at the same times): faults with increasing ``at_s``,
    mean spacing ``interval_s``, each aimed at one of ``targets`` (its ``target`` field)."""
    if name not in presets:
        raise error("preset", f"unknown preset {name!r} (known: {', '.join(presets)})")
    menu = presets[name][0]
    at = 0.0
    while True:
        at += rng.expovariate(1 / interval_s)
        fault = rng.choice(menu)(rng)
        aim = rng.choice(list(targets)) if targets else None
        yield replace(fault, at_s=round(at, 3), **{target: aim})
