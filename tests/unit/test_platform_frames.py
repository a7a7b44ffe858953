"""The per-event parse path (``event_frame``, ``key_fields``) gives exactly the frames of the
plain rules: the dataclass constructor and ``missing_key`` (pure)."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccstream.records import dedup_key
from ccstream.timefmt import parse_rfc3339
from connectors.platforms import Frame, FrameKind, missing_key
from connectors.platforms.genesys import KEYS as GENESYS_KEYS
from connectors.platforms.genesys import Genesys
from connectors.platforms.nice import KEYS as NICE_KEYS
from connectors.platforms.nice import Nice

LIMIT = 4096
TS = "2024-01-15T10:30:00.250Z"


def test_an_event_frame_equals_the_constructors_and_stays_frozen() -> None:
    """Equal, same hash and repr as ``Frame(...)``; assigning a field still raises."""
    raw = orjson.dumps({"eventType": "a", "correlationId": "c", "timestamp": TS, "cursor": "K"})
    parsed = Nice().parse(raw, False, LIMIT)
    built = Frame(FrameKind.EVENT, raw, correlation_id="c", dedup_key=f"a|c|{TS}", cursor="K",
                  epoch=parse_rfc3339(TS))
    assert parsed == built and hash(parsed) == hash(built) and repr(parsed) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.raw = b""  # type: ignore[misc]


key_value = st.one_of(st.none(), st.just(""), st.just(TS), st.text(max_size=3), st.integers(-5, 5),
                      st.lists(st.integers(-5, 5), max_size=1))


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(NICE_KEYS, key_value)))
def test_key_fields_are_judged_as_missing_key_judges_them(doc: dict[str, object]) -> None:
    """Whatever the key fields hold, each platform refuses the first bad one by name, or
    builds the event the constructor would."""
    raw = orjson.dumps(doc)
    for adapter, keys in ((Genesys(), GENESYS_KEYS), (Nice(), NICE_KEYS)):
        frame = adapter.parse(raw, False, LIMIT)
        missing = missing_key(doc, keys)
        if missing is not None:
            assert (frame.kind, frame.reason) == (FrameKind.BAD, f"missing_{missing}")
            continue
        values = {k: str(doc[k]) for k in keys}
        epoch = parse_rfc3339(values["timestamp"])
        if isinstance(adapter, Genesys) and epoch is None:
            assert frame.reason == "bad_timestamp"
            continue
        assert frame == Frame(
            FrameKind.EVENT, raw, correlation_id=values["correlationId"],
            dedup_key=dedup_key(values["eventType"], values["correlationId"],
                                values["timestamp"]),
            cursor=values.get("cursor"), epoch=epoch)
