"""Hypothesis strategies of platform frames, good and bad."""

from __future__ import annotations

import orjson
from hypothesis import strategies as st

texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
event_like = st.fixed_dictionaries(
    {}, optional={k: json_values | texts | st.just("2024-01-15T10:30:00.000Z") for k in
                  ("eventType", "correlationId", "timestamp", "cursor", "eventBody")},
)

frames = st.one_of(
    st.binary(max_size=200).map(lambda b: (b, True)),
    st.binary(max_size=200).map(lambda b: (b, False)),
    st.text(max_size=200).map(lambda t: (t.encode("utf-8", "surrogatepass"), False)),
    json_values.map(lambda v: (orjson.dumps(v), False)),
    event_like.map(lambda d: (orjson.dumps(d), False)),
)
