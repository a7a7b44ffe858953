"""Dedup agent throughput against a pass-through Faust agent: same topic, partitions, broker.

    .venv/bin/python bench/bench_dedup_agent.py [--events 20000] [--partitions 3]

One local Apache Kafka broker (devtools.devkafka), one raw topic filled once with N records
(a fifth of them duplicates, as the connector writes them). Then, each as a real worker
process with its own consumer group reading that topic from the start, exactly_once:
  * pass-through: the same Faust app and transactional write path, every record forwarded,
    no filter and no changelog op;
  * dedup: the real agent (filter test-and-set, one changelog op per partition per batch,
    the judged position in its key).
Throughput is records judged per second from the moment the worker reports its partitions
recovered until its group's committed offsets reach the end of the topic (start-up and
faust's ~10 s exactly-once recovery wait are excluded, identically for both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ccstream import records
from ccstream.config import Config, load
from devtools import devkafka


def _worker_main(role: str, config_file: str) -> int:
    """Run as a worker subprocess: the real dedup agent, or the pass-through one."""
    from pipeline.dedup.app import DedupAgent, Out
    from pipeline.dedup.state import PartitionDedup
    from pipeline.dedup.worker import run

    class PassThrough(DedupAgent):
        """Every record to clean through the same transactional path, no filter, no ops."""

        def _judged(self, partition: int, state: PartitionDedup, message: Any) -> list[Out]:
            state.next_offset = int(message.offset) + 1  # in memory only: no changelog op
            headers = [(k, bytes(v)) for k, v in (message.headers or ())]
            return [Out(self.topo.clean, message.key, message.value,
                        partition % self.topo.clean_partitions, message.timestamp, headers)]

    return run(load(config_file), PassThrough if role == "passthrough" else None)


def _config(path: Path, bootstrap: str, prefix: str, app_id: str, partitions: int) -> None:
    doc: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": bootstrap, "partitions": partitions},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.{app_id}.out",
                   "dlq": f"{prefix}.dlq", "cursors": f"{prefix}.cursors"},
        "dedup": {"app_id": f"{prefix}.{app_id}", "session_timeout_s": 3.0,
                  "expected_events_per_window": 1_000_000},
        "log": {"level": "INFO", "format": "json"},
    }
    lines = []
    for section, values in doc.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


async def _fill(bootstrap: str, topic: str, partitions: int, events: int) -> None:
    from ccstream.topics import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, partitions, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=20)
    await producer.start()
    try:
        now = time.time() - 3600
        futures = []
        for i in range(events):
            k = i if i % 5 else i // 2  # every fifth record repeats an earlier key
            corr, ts = f"corr-{k % 500}", records.rfc3339(now + k)
            value = orjson.dumps({"eventType": "interaction.routed", "correlationId": corr,
                                  "timestamp": ts, "eventBody": {"n": k}})
            headers = [(records.H_DEDUP_KEY,
                        records.dedup_key("interaction.routed", corr, ts).encode())]
            futures.append(await producer.send(topic, value, key=corr.encode(),
                                               headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _committed_at_end(config: Config, topic: str, partitions: int) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                group_id=config.dedup.app_id, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = [await consumer.committed(tp) or 0 for tp in tps]
        return all(c >= ends[tp] for c, tp in zip(committed, tps, strict=True))
    finally:
        await consumer.stop()


def _recovered_at(log_file: Path) -> float | None:
    for line in log_file.read_bytes().splitlines():
        if line.startswith(b"{") and b'"dedup.recovered"' in line:
            return datetime.fromisoformat(orjson.loads(line)["ts"]).timestamp()
    return None


async def _measure(role: str, work: Path, bootstrap: str, prefix: str, partitions: int,
                   events: int) -> float:
    cfg = work / f"{role}.toml"
    _config(cfg, bootstrap, prefix, role, partitions)
    config = load(cfg)
    log_file = (work / f"{role}.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220  # Popen returns at once; no blocking wait
        [sys.executable, __file__, "--worker", role, "--config", str(cfg)],
        stdout=log_file, stderr=subprocess.STDOUT)
    try:
        while not await _committed_at_end(config, config.topics.raw, partitions):
            if proc.poll() is not None:
                raise RuntimeError(f"{role} worker exited: see {log_file.name}")
            await asyncio.sleep(0.2)
        done = time.time()
        started = _recovered_at(work / f"{role}.log")
        assert started is not None
        return events / (done - started)
    finally:
        proc.kill()
        proc.wait()
        log_file.close()


async def _run(work: Path, bootstrap: str, events: int,
               partitions: int) -> tuple[float, float]:
    prefix = "bench"
    await _fill(bootstrap, f"{prefix}.raw", partitions, events)
    base = await _measure("passthrough", work, bootstrap, prefix, partitions, events)
    dedup = await _measure("dedup", work, bootstrap, prefix, partitions, events)
    return base, dedup


def _bench(events: int, partitions: int, keep_logs: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="ccstream-bench-") as tmp:
        work = Path(tmp)
        cluster = devkafka.KafkaCluster(work / "kafka", size=1, tied=True)
        cluster.start()  # outside the event loop: it runs its own probes
        try:
            base, dedup = asyncio.run(_run(work, cluster.bootstrap_servers, events, partitions))
        finally:
            cluster.stop()
            if keep_logs:
                Path(keep_logs).mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copy(log, keep_logs)
    print(f"events={events} partitions={partitions} (20% duplicates), exactly_once")
    print(f"pass-through agent: {base:8.0f} events/s")
    print(f"dedup agent:        {dedup:8.0f} events/s")
    print(f"ratio dedup / pass-through: {dedup / base:.2f} (target >= 0.8)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--worker", choices=["passthrough", "dedup"])
    parser.add_argument("--config")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the workers' logs to DIR")
    args = parser.parse_args()
    if args.worker:
        sys.exit(_worker_main(args.worker, args.config))
    print("command:", " ".join([sys.executable, *sys.argv]))
    _bench(args.events, args.partitions, args.keep_logs)


if __name__ == "__main__":
    main()
