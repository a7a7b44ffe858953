"""The dedup worker's stalls: how long clean stops flowing at a start, a kill -9 and a restart.

    .venv/bin/python bench/bench_stall.py [--events 3000] [--partitions 6] [--rounds 2]
                                          [--instance-id] [--keep-logs DIR]

State measured: **start-up and recovery**, never steady state. One local Apache Kafka broker, one
raw topic with N records waiting (a fifth duplicates). For each agent, as real worker processes:

* ``start``: a worker starts on that backlog (its changelog empty): seconds from the process
  start to the first record in clean (``read_committed``), and to clean holding every distinct
  key;
* ``restart``: with clean caught up, N more records are written, the worker is killed with
  SIGKILL and a new one started at once (its changelog now full, its group member dead but not
  yet expired): seconds from the new process start to its first clean record, and to caught up.

Phases are taken from the worker's own log lines (``dedup.starting``, ``dedup.partitions_
assigned``, ``dedup.recovered``, ``dedup.recovery_markers_skipped``) and printed per run. The
baseline is a pass-through agent on the same path (same app, transactions and commit interval,
no filter and no changelog, hence no changelog recovery), in the same run. ``--instance-id``
gives each worker a static group membership id (``[dedup] instance_id``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bench_dedup_agent import _config, _worker_main

from ccstream import records
from ccstream.procs import tie_to_parent
from ccstream.topics import TopicSpec, ensure_topics

PHASES = ("dedup.starting", "dedup.partitions_assigned", "dedup.recovery_markers_skipped",
          "dedup.recovered")


async def produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i in range(first, first + count):
            key = i if i % 5 else max(first, i - 1)  # a fifth are copies of their neighbour
            frame = {"eventType": "t", "correlationId": f"c{key}",
                     "timestamp": f"2024-01-15T10:00:00.{key % 1000:03d}Z"}
            headers = [(records.H_DEDUP_KEY, f"t|c{key}|{frame['timestamp']}".encode())]
            await producer.send(topic, orjson.dumps(frame), key=f"c{key}".encode(),
                                headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


class CleanTail:
    """Distinct keys in the clean topic, and when each first arrived (monotonic s)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap,
                                         isolation_level="read_committed",
                                         auto_offset_reset="earliest", enable_auto_commit=False)
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.keys: dict[bytes, float] = {}

    async def __aenter__(self) -> CleanTail:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()

    async def until(self, distinct: int, after: float, within_s: float) -> tuple[float, float]:
        """Seconds from ``after`` to the first key that arrived after it, and to ``distinct``."""
        deadline = time.monotonic() + within_s
        first = None
        while len(self.keys) < distinct and time.monotonic() < deadline:
            for batch in (await self.consumer.getmany(timeout_ms=100)).values():
                now = time.monotonic()
                for record in batch:
                    if record.key not in self.keys:
                        self.keys[record.key] = now
                        if first is None and now >= after:
                            first = now
        done = time.monotonic()
        if len(self.keys) < distinct:
            raise TimeoutError(f"clean holds {len(self.keys)} of {distinct} keys")
        return (first or done) - after, done - after


def start_worker(role: str, config: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--config", str(config)],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
        preexec_fn=tie_to_parent,  # noqa: PLW1509 - prctl only, no locks taken
        env={**os.environ, "CCSTREAM_SUPERVISED_CHILD": "1"}, cwd=Path(__file__).parent)
    return proc, started


def phases(log: Path, since_line: int) -> dict[str, float]:
    """Wall-clock seconds of each phase line after ``since_line``, relative to the first."""
    out: dict[str, float] = {}
    lines = log.read_text(errors="replace").splitlines()[since_line:]
    for line in lines:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        event = doc.get("event")
        if event in PHASES and event not in out and isinstance(doc.get("ts"), str):
            out[event] = _epoch(doc["ts"])
    base = out.get("dedup.starting")
    return {k: round(v - base, 2) for k, v in out.items()} if base else {}


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run_agent(role: str, args: argparse.Namespace, bootstrap: str, work: Path,
                    index: int) -> list[dict[str, Any]]:
    prefix = f"stall{index}"
    config = work / f"{role}.toml"
    _config(config, bootstrap, prefix, f"{role}-{index}", args.partitions)
    # the product's session timeout (the bench_dedup_agent config shortens it), and the
    # static membership id when asked
    dedup = f"[dedup]\nsession_timeout_s = {args.session_timeout}\n"
    if args.instance_id:
        dedup += f'instance_id = "{role}-bench"\n'
    text = config.read_text().replace("[dedup]\n", dedup).replace(
        "session_timeout_s = 3.0\n", "")
    config.write_text(text)
    raw, clean = f"{prefix}.raw", f"{prefix}.{role}-{index}.out"
    # clean exists before the worker starts, so that the tail's metadata knows it from the
    # start (a consumer assigned to a topic that appears later only sees it at its next
    # metadata refresh: a stall of the benchmark's own, not of the worker)
    await ensure_topics(bootstrap, [TopicSpec(raw, args.partitions, 1, {}),
                                    TopicSpec(clean, args.partitions, 1, {})])
    await produce(bootstrap, raw, 0, args.events)
    distinct = len({i if i % 5 else max(0, i - 1) for i in range(args.events)})
    log = work / f"{role}.log"
    rows = []
    proc, started = start_worker(role, config, log)
    try:
        async with CleanTail(bootstrap, clean, args.partitions) as tail:
            first, done = await tail.until(distinct, started, args.timeout)
            rows.append({"agent": role, "scenario": "start", "first_clean_s": first,
                         "caught_up_s": done, "phases": phases(log, 0)})
            for _ in range(args.rounds):
                base = args.events * (len(rows))
                await produce(bootstrap, raw, base, args.events)
                distinct += len({i if i % 5 else max(base, i - 1)
                                 for i in range(base, base + args.events)})
                lines = len(log.read_text(errors="replace").splitlines())
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                proc, started = start_worker(role, config, log)
                first, done = await tail.until(distinct, started, args.timeout)
                rows.append({"agent": role, "scenario": "restart after kill -9",
                             "first_clean_s": first, "caught_up_s": done,
                             "phases": phases(log, lines)})
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return rows


async def main_async(args: argparse.Namespace) -> None:
    from _harness import kafka_broker, machine, print_header

    print_header("dedup worker stalls (state measured: start-up and recovery)")
    work = Path(tempfile.mkdtemp(prefix="ccstream-stall-"))
    try:
        rows = []
        with kafka_broker(work) as bootstrap:
            for index, role in enumerate(("passthrough", "dedup")):
                rows += await run_agent(role, args, bootstrap, work, index)
    finally:
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("kafka"))
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'agent':12} {'scenario':24} {'first clean s':>13} {'caught up s':>11}  phases")
    for r in rows:
        print(f"{r['agent']:12} {r['scenario']:24} {r['first_clean_s']:13.2f} "
              f"{r['caught_up_s']:11.2f}  {r['phases']}")
    for scenario in ("start", "restart after kill -9"):
        base = [r["first_clean_s"] for r in rows if r["agent"] == "passthrough"
                and r["scenario"] == scenario]
        ours = [r["first_clean_s"] for r in rows if r["agent"] == "dedup"
                and r["scenario"] == scenario]
        if base and ours:
            b, o = max(base), max(ours)
            print(f"{scenario}: dedup first clean {o:.2f} s (worst) vs pass-through {b:.2f} s "
                  f"= {o / b:.2f}x; target <= 5 s")
    print(machine())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="kill -9 restarts per agent")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--instance-id", action="store_true")
    parser.add_argument("--session-timeout", type=float, default=10.0,
                        help="[dedup] session_timeout_s (default: the product's, 10)")
    parser.add_argument("--keep-logs", type=Path)
    parser.add_argument("--role", choices=("dedup", "passthrough"))
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.role:
        return _worker_main(args.role, args.config)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
