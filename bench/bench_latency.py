"""End-to-end latency: platform emit -> raw topic -> clean topic, at a steady rate.

Set-up (all real processes on this machine): one Apache Kafka broker, the simulator (its own
process, ``--streams`` Genesys tenants sharing ``--rate`` events/s, 1 % live duplicates),
``ccstream connect`` and ``ccstream dedup`` as separate processes with default settings (only the
dedup filter is sized for an hour, as ``devtools.e2e`` does, so start-up stays short), and this
process as the downstream reader.

Latency of an event = the reader's wall clock when it gets the record - the event's
``timestamp`` (the simulator stamps an event when it generates it: that is "platform emit";
the three processes share one clock). The reader consumes both topics with
``fetch_max_wait_ms=5`` so that its own long-poll does not count (aiokafka's default is 500 ms):

* **raw** (read_uncommitted): the connector's share, the baseline of this run;
* **clean** (``isolation_level=read_committed``, what a downstream consumer sees): the whole.

The gap between the two is the dedup worker, dominated by its exactly-once transaction commit
(``[dedup] commit_interval_s``, default 0.5 s): records in a transaction are invisible to
``read_committed`` readers until it commits. That setting (and, much less, the producer's
``[kafka] linger_ms``) is what trades latency for throughput; ``--commit-interval`` shows it.

    .venv/bin/python bench/bench_latency.py [--rate 2000] [--streams 4] [--seconds 20]
        [--commit-interval 0.5] [--linger-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness as h

from ccstream.records import H_DEDUP_KEY, header
from ccstream.timefmt import parse_rfc3339 as parse_timestamp


def config_text(args: argparse.Namespace, bootstrap: str, prefix: str, port: int) -> str:
    from devtools.e2e import render_toml

    sections = {
        "kafka": {"bootstrap_servers": bootstrap, "linger_ms": args.linger_ms,
                  "partitions": args.partitions},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "dedup": {"app_id": f"{prefix}-dedup", "window_s": 3600.0,
                  "expected_events_per_window": 1_000_000,
                  "commit_interval_s": args.commit_interval},
        "log": {"level": "INFO", "format": "json"},
    }
    streams = [{
        "name": f"s{i}", "platform": "genesys",
        "url": f"ws://127.0.0.1:{port}/api/v2/analytics/events",
        "token_url": f"http://127.0.0.1:{port}/oauth/token",
        "client_id": f"tenant-{i}", "client_secret": h.client_secret(i)}
        for i in range(args.streams)]
    return render_toml(sections, streams)


async def read_latencies(bootstrap: str, prefix: str, warmup_s: float, seconds: float
                         ) -> dict[str, list[float]]:
    """Per topic, the latency (ms) of every record read during the measuring window."""
    from aiokafka import AIOKafkaConsumer

    out: dict[str, list[float]] = {"raw": [], "clean": []}

    async def follow(kind: str, isolation: str) -> None:
        consumer = AIOKafkaConsumer(
            f"{prefix}.{kind}", bootstrap_servers=bootstrap, isolation_level=isolation,
            auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=5,
            group_id=f"{prefix}-reader-{kind}")
        await consumer.start()
        try:
            start = time.monotonic()
            while time.monotonic() - start < warmup_s + seconds:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                if time.monotonic() - start < warmup_s:
                    continue
                for records in batch.values():
                    for record in records:
                        key = header(list(record.headers or ()), H_DEDUP_KEY)
                        emitted = parse_timestamp(key.decode().rsplit("|", 1)[1]) if key else None
                        if emitted is not None:
                            out[kind].append((now - emitted) * 1000)
        finally:
            await consumer.stop()

    await asyncio.gather(follow("raw", "read_uncommitted"), follow("clean", "read_committed"))
    return out


async def create_topics(path: Path) -> None:
    from ccstream.config import load
    from ccstream.topics import contract_topics, ensure_topics

    config = load(path)
    await ensure_topics(config.kafka.bootstrap_servers, contract_topics(config))


async def wait_flowing(bootstrap: str, topic: str, timeout_s: float) -> None:
    """Until the clean topic has records (the dedup worker has joined and is committing)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ccstream.topics import partition_count

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                count = await partition_count(bootstrap, topic)
                ends = await consumer.end_offsets([TopicPartition(topic, p)
                                                   for p in range(count)])
                if sum(ends.values()) > 0:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError(f"nothing committed on {topic} within {timeout_s} s")
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s in total")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--commit-interval", type=float, default=0.5,
                        help="[dedup] commit_interval_s (default = the config default)")
    parser.add_argument("--linger-ms", type=float, default=5.0,
                        help="[kafka] linger_ms (default = the config default)")
    parser.add_argument("--partitions", type=int, default=6,
                        help="[kafka] partitions of raw and clean (default = the config default)")
    parser.add_argument("--profile-dedup", action="store_true",
                        help="py-spy the dedup worker during the measuring window")
    parser.add_argument("--profile-out", type=Path,
                        default=Path(__file__).parent / "results" / "dedup_pyspy.txt")
    args = parser.parse_args(argv)
    h.print_header("end-to-end latency: platform emit -> raw (connector) -> clean (dedup)")
    children = h.Children()
    prefix = "bench.latency"
    with h.workdir("bench-latency-") as work, h.kafka_broker(work) as bootstrap:
        logs = h.log_dir("latency")
        print("logs:", logs)
        try:
            sim, port = h.start_sim(children, logs, clients=args.streams,
                                    rate=args.rate / args.streams, duplicate_rate=0.01)
            path = work / "latency.toml"
            path.write_text(config_text(args, bootstrap, prefix, port))
            # created here first: a connector and a dedup worker started at the same moment
            # race to create them, and the loser exits (see bench/README.md "Open findings")
            asyncio.run(create_topics(path))
            connector = children.start("connect", [sys.executable, "-m", "pipeline", "connect",
                                                   "--config", str(path)], logs / "connect.log")
            dedup = children.start("dedup", [sys.executable, "-m", "pipeline", "dedup",
                                             "--config", str(path)], logs / "dedup.log")
            asyncio.run(wait_flowing(bootstrap, f"{prefix}.clean", 180))
            spy = None
            if args.profile_dedup:
                spy = h.start_py_spy(children, dedup.pid, args.warmup + args.seconds,
                                     args.profile_out)
            cpu0 = {c.name: h.cpu_seconds(c.pid) for c in (sim, connector, dedup)}
            lat = asyncio.run(read_latencies(bootstrap, prefix, args.warmup, args.seconds))
            cpu = {c.name: (h.cpu_seconds(c.pid) - cpu0[c.name]) / (args.warmup + args.seconds)
                   for c in (sim, connector, dedup)}
            if spy is not None:
                spy.popen.wait(60)
        finally:
            children.stop_all()
    print(f"\n{args.streams} Genesys streams, {args.rate:.0f} events/s in total; "
          f"dedup commit_interval_s={args.commit_interval}, kafka linger_ms={args.linger_ms}, "
          f"partitions={args.partitions}; "
          f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up")
    print(f"{'stage':28} {'records':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8}")
    for kind, label in (("raw", "emit -> raw (connector)"),
                        ("clean", "emit -> clean (whole path)")):
        values = lat[kind]
        if not values:
            print(f"{label:28} no records")
            continue
        print(f"{label:28} {len(values):8d} {len(values) / args.seconds:9.0f} "
              f"{h.percentile(values, 50):8.1f} {h.percentile(values, 99):8.1f} "
              f"{max(values):8.1f}")
    if lat["raw"] and lat["clean"]:
        ratio = h.percentile(lat["clean"], 99) / h.percentile(lat["raw"], 99)
        print(f"p99 clean / p99 raw = {ratio:.1f}; target p99 emit -> clean < 250 ms: "
              f"{'met' if h.percentile(lat['clean'], 99) < 250 else 'MISSED'}")
    print("CPU share during the run: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in cpu.items()))
    if args.profile_dedup and args.profile_out.exists():
        print(f"\npy-spy profile of the dedup worker ({args.profile_out}):")
        print(h.summarize_collapsed(args.profile_out))
    print("machine after:", h.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
