"""Reading a range of one partition ourselves, ``read_committed``, as faust's consumer reads it.

The agent reads raw records faust skipped (``DedupAgent._read_back``); the table checks that
what is left of a changelog partition after its last record is only transaction markers
(``DedupTable.on_changelog_event``). Offsets that hold no record for a ``read_committed``
reader (commit and abort markers, aborted records, retention) simply yield nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_range(bootstrap: str, tp: TopicPartition, start: int, end: int,
                     timeout_s: float) -> list[Any]:
    """Every committed record of ``tp`` with ``start <= offset < end``; ``TimeoutError`` if the
    consumer's position has not reached ``end`` within ``timeout_s``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    found: list[Any] = []
    try:
        await consumer.start()
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while await consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"read {len(found)} records, stuck before {end}")
            batch = await consumer.getmany(tp, timeout_ms=500)
            found += [r for r in batch.get(tp, []) if start <= r.offset < end]
    finally:
        await consumer.stop()
    return found
