"""Dedup agent throughput against a pass-through Faust agent: same topic, partitions, broker.

    .venv/bin/python bench/bench_dedup_agent.py [--events 200000] [--partitions 6] [--rounds 1]
        [--floor] [--profile DIR] [--keep-logs DIR]

State measured: **a backlog being drained** (throughput), neither start-up nor steady state at a
rate. One local Apache Kafka broker (devtools.devkafka), one raw topic filled once with N records
(a fifth of them duplicates, as the connector writes them). Then, each as a real worker process
with its own consumer group reading that topic from the start, exactly_once:

  * pass-through: the same Faust app and transactional write path, every record forwarded,
    no filter and no changelog op;
  * dedup: the real agent (filter test-and-set, one changelog op per partition per batch,
    the judged position in its key);
  * with ``--floor``, first a no-op agent too: faust's delivery, acks and offset commits, no
    record written. What no agent on this faust can beat on this machine.

Throughput is records judged per second from the moment the worker reports its partitions
recovered until its group's committed offsets reach the end of the topic (start-up and
faust's recovery are excluded, identically for both); CPU per event is the worker's user +
system CPU over the same interval, divided by N (less noisy than events/s on a shared machine).
``--rounds`` repeats the pair, alternating which agent goes first. ``--profile DIR`` samples each
worker with py-spy over that interval (``pip install py-spy``) and prints the hottest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ccstream import records
from ccstream.config import Config, load
from devtools import devkafka

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as h  # the bench folder's helper, after its path


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

    class Floor(DedupAgent):
        """Nothing written: faust's delivery, acks and offset commits only."""

        async def handle(self, events: Sequence[Any]) -> None:
            return None

    agents = {"passthrough": PassThrough, "floor": Floor, "dedup": None}
    return run(load(config_file), agents[role])


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


@dataclass(frozen=True)
class Result:
    role: str
    events_per_s: float
    cpu_us_per_event: float
    load: str


async def _measure(role: str, work: Path, bootstrap: str, prefix: str, partitions: int,
                   events: int, profile: Path | None) -> Result:
    cfg = work / f"{role}.toml"
    _config(cfg, bootstrap, prefix, role, partitions)
    config = load(cfg)
    log_path = work / f"{role}.log"
    log_file = log_path.open("wb")
    children = h.Children()
    proc = subprocess.Popen(  # noqa: ASYNC220  # Popen returns at once; no blocking wait
        [sys.executable, __file__, "--worker", role, "--config", str(cfg)],
        stdout=log_file, stderr=subprocess.STDOUT)
    spy = None
    try:
        cpu0 = None
        while not await _committed_at_end(config, config.topics.raw, partitions):
            if proc.poll() is not None:
                raise RuntimeError(f"{role} worker exited: see {log_path}")
            if cpu0 is None and _recovered_at(log_path) is not None:
                cpu0 = h.cpu_seconds(proc.pid)
                if profile is not None:
                    spy = h.start_py_spy(children, proc.pid, 600, profile / f"{role}.txt")
            await asyncio.sleep(0.2)
        done = time.time()
        cpu = h.cpu_seconds(proc.pid) - (cpu0 or 0.0)
        started = _recovered_at(log_path)
        assert started is not None
        loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
        return Result(role, events / (done - started), cpu / events * 1e6, loadavg)
    finally:
        proc.kill()  # py-spy writes its profile when its target exits
        proc.wait()
        if spy is not None:
            spy.popen.wait(60)
        children.stop_all()
        log_file.close()


async def _run(work: Path, bootstrap: str, events: int, partitions: int, rounds: int,
               profile: Path | None, floor: bool) -> list[dict[str, Result]]:
    out = []
    for index in range(rounds):
        prefix = f"bench{index}"
        await _fill(bootstrap, f"{prefix}.raw", partitions, events)
        order = ("passthrough", "dedup") if index % 2 == 0 else ("dedup", "passthrough")
        out.append({role: await _measure(role, work, bootstrap, prefix, partitions, events,
                                         profile) for role in (("floor",) * floor + order)})
    return out


def _bench(events: int, partitions: int, rounds: int, keep_logs: str | None,
           profile: Path | None, floor: bool) -> None:
    h.print_header("dedup throughput (state measured: a backlog being drained)")
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ccstream-bench-") as tmp:
        work = Path(tmp)
        cluster = devkafka.KafkaCluster(work / "kafka", size=1, tied=True)
        cluster.start()  # outside the event loop: it runs its own probes
        try:
            results = asyncio.run(_run(work, cluster.bootstrap_servers, events, partitions,
                                       rounds, profile, floor))
        finally:
            cluster.stop()
            if keep_logs:
                Path(keep_logs).mkdir(parents=True, exist_ok=True)
                for log in work.glob("*.log"):
                    shutil.copy(log, keep_logs)
    print(f"\nevents={events} partitions={partitions} (20% duplicates), exactly_once")
    print(f"{'round':5} {'agent':12} {'events/s':>9} {'CPU us/ev':>9}  load average")
    for index, got in enumerate(results):
        for r in got.values():
            print(f"{index:5d} {r.role:12} {r.events_per_s:9.0f} {r.cpu_us_per_event:9.1f}  "
                  f"{r.load}")
        base, dedup = got["passthrough"], got["dedup"]
        rate = dedup.events_per_s / base.events_per_s
        cpu = dedup.cpu_us_per_event / base.cpu_us_per_event
        print(f"      dedup / pass-through: events/s {rate:.2f} (target >= 0.9), CPU per "
              f"event {cpu:.2f}x; dedup {dedup.events_per_s:.0f} ev/s (target >= 10,000)")
    if profile is not None:
        for role in ("floor", "passthrough", "dedup"):
            path = profile / f"{role}.txt"
            if path.exists():
                print(f"\npy-spy profile of the {role} worker, drain only ({path}):")
                print(h.summarize_collapsed(path, top=25))
    print("machine after:", h.machine())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6,
                        help="raw partitions (default = the config default, 6)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="pairs of runs, alternating which agent goes first")
    parser.add_argument("--floor", action="store_true",
                        help="also a no-op agent first (faust's delivery and commits only)")
    parser.add_argument("--worker", choices=["passthrough", "dedup", "floor"])
    parser.add_argument("--config")
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the workers' logs to DIR")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy each worker during the drain; collapsed stacks into DIR")
    args = parser.parse_args()
    if args.worker:
        sys.exit(_worker_main(args.worker, args.config))
    _bench(args.events, args.partitions, args.rounds, args.keep_logs, args.profile,
           args.floor)


if __name__ == "__main__":
    main()
