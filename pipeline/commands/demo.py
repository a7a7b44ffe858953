"""The main job on embedded defaults.

Until the simulator, connector and dedup worker land, this is a minimal end-to-end smoke of the
foundation: start the local Kafka broker, create ccstream's topics, send a few records through
the raw topic with an idempotent acks=all producer, read them back, and stop the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from connectors.config import Config, KafkaSettings
from connectors.topics import contract_topics, ensure_topics
from pipeline import devkafka


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--records", type=int, default=100, help="records to round-trip")


async def _round_trip(bootstrap: str, count: int) -> int:
    config = Config(kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=3))
    created = await ensure_topics(bootstrap, contract_topics(config))
    print(f"topics created: {', '.join(created)}")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send(config.topics.raw, key=f"corr-{i % 7}".encode(), value=b"{}")
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(config.topics.raw, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got = 0
    try:
        deadline = time.monotonic() + 30
        while got < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            got += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return got


def main(args: argparse.Namespace) -> int:
    started = time.monotonic()
    print("starting the local Apache Kafka broker (first run downloads it, ~1 min)...")
    with tempfile.TemporaryDirectory(prefix="ccstream-demo-") as tmp, \
            devkafka.KafkaCluster(Path(tmp)) as kafka:
        print(f"broker up at {kafka.bootstrap_servers} in {time.monotonic() - started:.1f} s")
        got = asyncio.run(_round_trip(kafka.bootstrap_servers, args.records))
    ok = got == args.records
    print(f"round trip: sent {args.records}, read back {got}: {'OK' if ok else 'FAILED'}")
    if not ok:
        print("ccstream demo: the smoke round trip lost records", file=sys.stderr)
    return 0 if ok else 1
