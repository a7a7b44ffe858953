"""The connector's Kafka side against the real broker: raw/DLQ records and cursors.

Also the helpers the other ``test_conn_*`` modules share (reading a topic to its end, building a
scaled-time configuration for the simulator).
"""

from __future__ import annotations

import orjson
import pytest
from support.connector import make_config, read_all

from ccstream import records
from ccstream.topics import (
    contract_topics,
    ensure_topics,
    max_record_bytes,
    topic_config,
)
from connectors.kafka import cursor_store
from connectors.kafka.sink import KafkaSink
from connectors.platforms import adapter_for

pytestmark = pytest.mark.kafka


async def test_sink_writes_contract_records_and_dlq(bootstrap: str, topic_prefix: str) -> None:
    """Raw records are keyed by correlationId with verbatim bytes and headers; bad frames reach
    the DLQ keyed by stream with their reason; raw and clean take a frame of max_frame_bytes
    with its headers."""
    config = make_config(bootstrap, topic_prefix, [])
    await ensure_topics(bootstrap, contract_topics(config))
    for topic in (config.topics.raw, config.topics.clean):
        limit = int((await topic_config(bootstrap, topic))["max.message.bytes"])
        assert limit == max_record_bytes(config.connector.max_frame_bytes)
    sink = KafkaSink(config.kafka, config.topics)
    await sink.start()
    try:
        raw = orjson.dumps({"eventId": "e1", "eventType": "screenpop", "correlationId": "c9",
                            "timestamp": "2024-01-15T10:30:00.000Z", "cursor": "K7", "data": {}})
        frame = adapter_for("nice").parse(raw, False, 4096)
        await (await sink.send_event("nice-1", "nice", frame, 1705314600.0))
        await (await sink.send_dlq("nice-1", "nice", b"\xff\x00", "binary_frame",
                                   received_at=1705314600.0, binary=True))
    finally:
        await sink.stop()
    [event] = await read_all(bootstrap, config.topics.raw)
    assert (event.key, event.value) == (b"c9", raw)
    assert dict(event.headers) == {
        "ccstream-stream": b"nice-1", "ccstream-platform": b"nice",
        "ccstream-dedup-key": b"screenpop|c9|2024-01-15T10:30:00.000Z",
        "ccstream-received-at": b"2024-01-15T10:30:00.000Z", "ccstream-cursor": b"K7"}
    [dead] = await read_all(bootstrap, config.topics.dlq)
    assert (dead.key, dead.value) == (b"nice-1", b"/wA=")
    assert records.header(dead.headers, records.H_DLQ_REASON) == b"binary_frame"
    assert records.header(dead.headers, records.H_DLQ_ENCODING) == b"base64"


async def test_cursor_store_reads_back_the_latest_value_per_stream(
        bootstrap: str, topic_prefix: str) -> None:
    """Start-up sees the last cursor of each stream, tombstones delete, foreign values are
    ignored, and an empty or missing topic gives no cursors."""
    config = make_config(bootstrap, topic_prefix, [])
    assert await cursor_store.load(bootstrap, config.topics.cursors) == {}
    await ensure_topics(bootstrap, contract_topics(config))
    sink = KafkaSink(config.kafka, config.topics)
    await sink.start()
    try:
        for stream, value in [("g", "2024-01-15T10:30:00.000Z"), ("g", "2024-01-15T10:31:00.000Z"),
                              ("n", "K1")]:
            param = "since" if stream == "g" else "cursor"
            await (await sink.send_cursor(stream, cursor_store.encode(
                "genesys" if stream == "g" else "nice", {param: value}, 1705314600.0)))
        await (await sink.send_cursor("gone", cursor_store.encode("nice", {"cursor": "x"}, 0.0)))
        await (await sink.producer.send(config.topics.cursors, value=None, key=b"gone"))
        await (await sink.producer.send(config.topics.cursors, value=b"junk", key=b"junk"))
    finally:
        await sink.stop()
    stored = await cursor_store.load(bootstrap, config.topics.cursors)
    assert set(stored) == {"g", "n"}
    assert (stored["g"].param, stored["g"].value) == ("since", "2024-01-15T10:31:00.000Z")
    assert (stored["n"].platform, stored["n"].value) == ("nice", "K1")
    assert stored["n"].updated_at == "2024-01-15T10:30:00.000Z"


def test_cursors_command_lists_every_stream() -> None:
    """``ccstream cursors`` shows each configured stream's cursor, says when there is none, and
    marks cursors of streams no longer configured."""
    from ccstream.commands.cursors import render

    config = make_config("x:1", "p", [
        {"name": "g", "platform": "genesys", "url": "wss://h/e", "token_url": "https://h/t",
         "client_id": "c", "client_secret": "s"},
        {"name": "n", "platform": "nice", "url": "wss://h/e", "token_url": "https://h/t",
         "client_id": "c", "client_secret": "s"}])
    stored = {"g": cursor_store.StoredCursor("genesys", {"since": "2024-01-15T10:30:00.000Z"}, "u"),
              "old": cursor_store.StoredCursor("nice", {"cursor": "K"}, "u", owner="host-2")}
    lines = render(config, stored)
    assert lines[0] == "g\tgenesys\tsince=2024-01-15T10:30:00.000Z\tupdated_at=u"
    assert lines[1] == "n\tnice\t(no cursor committed)"
    # cluster mode: the instance that committed it
    assert lines[2] == "old\tnice\tcursor=K\tupdated_at=u\towner=host-2\t(not in the configuration)"
