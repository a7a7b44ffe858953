"""The sink's murmur2 picks the partition aiokafka's default partitioner (and the Java
client) would: equal to ``aiokafka.partitioner.murmur2`` on every input (pure)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.kafka.sink import murmur2


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_murmur2_equals_aiokafkas_on_any_bytes(data: bytes) -> None:
    """Any length (every tail of 0-3 bytes), any byte values."""
    assert murmur2(data) == aiokafka_murmur2(data)


def test_murmur2_of_known_keys() -> None:
    """Empty, short and correlation-id-like keys, as the Java client hashes them."""
    for key in (b"", b"a", b"ab", b"abc", b"abcd", b"1a2b3c4d-0123456789ab"):
        assert murmur2(key) == aiokafka_murmur2(key)
