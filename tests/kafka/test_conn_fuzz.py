"""Hypothesis-fuzzed frames through a real connection: the stream never stops, every bad frame
is in the DLQ with its reason, every event is in the raw topic.

A small scripted platform (aiohttp on loopback, Genesys flavour) sends the drawn frames, then a
marker event; the connector runs for real against it and the real broker.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.connector import dedup_keys, make_config, read_all, running, until
from support.frames import frames
from support.scripted import ScriptedPlatform

from ccstream import records
from connectors.platforms import FrameKind
from connectors.platforms.genesys import Genesys

pytestmark = pytest.mark.kafka


_examples = itertools.count()


@settings(max_examples=6, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(frames, min_size=1, max_size=25))
def test_fuzzed_frames_never_stop_the_stream(bootstrap: str, topic_prefix: str,
                                             script: list[tuple[bytes, bool]]) -> None:
    """Whatever the frames, one connection carries them all: bad ones to the DLQ with their
    reason and bytes, events to the raw topic, and the marker after them arrives."""
    asyncio.run(_scenario(bootstrap, f"{topic_prefix}.{next(_examples)}", script))


async def _scenario(bootstrap: str, prefix: str, script: list[tuple[bytes, bool]]) -> None:
    parsed = [Genesys().parse(raw, binary, 1_048_576) for raw, binary in script]
    bad = [p for p in parsed if p.kind is FrameKind.BAD]
    events = {p.dedup_key for p in parsed if p.kind is FrameKind.EVENT}
    async with ScriptedPlatform(script) as platform:
        base = f"http://127.0.0.1:{platform.port}"
        config = make_config(bootstrap, prefix, [{
            "name": "fz", "platform": "genesys", "client_id": "fz", "client_secret": "x",
            "url": f"ws://127.0.0.1:{platform.port}/api/v2/analytics/events",
            "token_url": f"{base}/oauth/token"}])
        async with running(config):
            marker_key = "test.marker|marker|2024-01-15T10:30:00.000Z"
            await until(lambda: _raw_has(bootstrap, config.topics.raw, events | {marker_key}),
                        timeout=30)
            dlq = await read_all(bootstrap, config.topics.dlq)
            assert platform.handshakes == 1
    assert len(dlq) == len(bad)
    got = sorted((records.header(r.headers, records.H_DLQ_REASON), _decoded(r)) for r in dlq)
    want = sorted((f.reason.encode(), f.raw) for f in bad)
    assert got == want


async def _raw_has(bootstrap: str, topic: str, keys: set[str]) -> bool:
    return keys <= dedup_keys(await read_all(bootstrap, topic))


def _decoded(record: Any) -> bytes:
    if records.header(record.headers, records.H_DLQ_ENCODING) == b"base64":
        return base64.b64decode(record.value)
    return bytes(record.value)
