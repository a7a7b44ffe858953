"""Memory: connector RSS per idle stream and per 1,000 streams; dedup worker RSS per million keys
held against the Bloom filter's theoretical size.

Connector (``python -m pipeline connect``): N idle streams of one simulator tenant (``rate=0``,
``max_connections`` raised), N in ``--streams`` (default 1, 100, 1000). To get 1,000 streams
connected in seconds, the per-host cap is raised (``reconnects_per_second`` and
``reconnect_burst`` = 1000); nothing else changes. RSS (``/proc/PID/statm``) is read once every
stream has logged ``ws.connected`` and 3 s have passed. Per stream = slope between the smallest
and the largest N. Baseline in the same run: a bare process (plain ``websockets`` clients, one
``aiohttp`` token request, nothing else) holding the same N connections.

Dedup worker (``python -m pipeline dedup``): a one-partition raw topic filled with ``--keys``
distinct events (fake but well-formed Genesys frames with the contract's headers); the worker's
filter is sized so that one generation holds exactly that many keys
(``expected_events_per_window`` = keys x (generations - 1)). RSS is read when the worker is idle
and recovered (no keys), and again once the clean topic holds every key. Compared with the
filter's theoretical size for those keys at the configured false-positive target (the
``-n ln p / (ln 2)^2`` optimum at ``p / G``, ``pipeline.bloom.size_for``), scaled per million.

    .venv/bin/python bench/bench_memory.py [--streams 1,100,1000] [--keys 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness as h

MIB = 1024 * 1024


# -- bare baseline role: hold N idle connections ---------------------------------------------------
async def bare_hold(args: argparse.Namespace) -> None:
    import aiohttp
    from websockets.asyncio.client import connect

    async with aiohttp.ClientSession() as http:
        answer = await http.post(args.token_url, data={"grant_type": "client_credentials"},
                                 headers={"Authorization": aiohttp.encode_basic_auth(
                                     "tenant-0", h.client_secret(0))})
        token = (await answer.json())["access_token"]
    sockets = [await connect(f"{args.url}?access_token={token}", ping_interval=10,
                             open_timeout=60) for _ in range(args.hold)]
    print(f"READY {len(sockets)}", flush=True)
    await asyncio.Event().wait()


def _wait_line(path: Path, needle: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(needle) >= count:
            return True
        time.sleep(0.2)
    return False


def connector_rss(n: int, bootstrap: str, port: int, logs: Path, children: h.Children) -> int:
    from devtools.e2e import render_toml

    prefix = f"bench.memory.c{n}"
    sections: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "connector": {"reconnects_per_second": 1000.0, "reconnect_burst": 1000},
        "log": {"level": "INFO", "format": "json"},
    }
    streams = [{"name": f"s{i}", "platform": "genesys",
                "url": f"ws://127.0.0.1:{port}/api/v2/analytics/events",
                "token_url": f"http://127.0.0.1:{port}/oauth/token",
                "client_id": "tenant-0", "client_secret": h.client_secret(0)} for i in range(n)]
    path = logs / f"{prefix}.toml"
    path.write_text(render_toml(sections, streams))
    log = logs / f"connect-{n}.log"
    child = children.start(f"connect-{n}", [sys.executable, "-m", "pipeline", "connect",
                                            "--config", str(path)], log)
    try:
        if not _wait_line(log, '"ws.connected"', n, 180):
            raise RuntimeError(f"{n} streams did not all connect; see {log}")
        time.sleep(3)
        return h.rss_bytes(child.pid)
    finally:
        child.stop()


def bare_rss(n: int, port: int, logs: Path, children: h.Children) -> int:
    log = logs / f"bare-{n}.log"
    child = children.start(f"bare-{n}", [
        sys.executable, __file__, "--role", "bare", "--hold", str(n),
        "--url", f"ws://127.0.0.1:{port}/api/v2/analytics/events",
        "--token-url", f"http://127.0.0.1:{port}/oauth/token"], log)
    try:
        if not _wait_line(log, "READY", 1, 180):
            raise RuntimeError(f"bare client did not open {n} connections; see {log}")
        time.sleep(3)
        return h.rss_bytes(child.pid)
    finally:
        child.stop()


# -- dedup ----------------------------------------------------------------------------------
async def fill_raw(bootstrap: str, topic: str, keys: int, first: int = 0) -> None:
    import orjson
    from aiokafka import AIOKafkaProducer

    from ccstream import records
    from ccstream.topics import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, {})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                enable_idempotence=True, max_batch_size=1_048_576)
    await producer.start()
    try:
        now = time.time()
        stamp = records.rfc3339(now)
        for i in range(first, first + keys):
            corr = f"c-{i:08d}"
            value = orjson.dumps({"eventType": "interaction.routed", "correlationId": corr,
                                  "timestamp": stamp, "eventBody": {"queue": "q1"}})
            headers = [(records.H_STREAM, b"bench"), (records.H_PLATFORM, b"genesys"),
                       (records.H_DEDUP_KEY, f"interaction.routed|{corr}|{stamp}".encode()),
                       (records.H_RECEIVED_AT, stamp.encode())]
            await producer.send(topic, value=value, key=corr.encode(), headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


async def clean_total(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ccstream.topics import partition_count

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic)
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
        return int(sum(ends.values()))
    except Exception:
        return 0
    finally:
        await consumer.stop()


def dedup_rss(args: argparse.Namespace, bootstrap: str, logs: Path, children: h.Children
              ) -> tuple[list[tuple[int, int]], float]:
    """RSS after each step of keys (0 = idle, recovered), and the seconds it all took."""
    from devtools.e2e import render_toml

    prefix = "bench.memory.dedup"
    generations = 3
    sections = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "dedup": {"app_id": f"{prefix}-app", "generations": generations,
                  "expected_events_per_window": args.keys * (generations - 1)},
        "log": {"level": "INFO", "format": "json"},
    }
    path = logs / f"{prefix}.toml"
    path.write_text(render_toml(sections, []))
    asyncio.run(_ensure(path))
    log = logs / "dedup.log"
    command = [sys.executable, "-m", "pipeline"]
    if args.trace:
        command = [sys.executable, str(h.BENCH_DIR / "_traced.py"), str(args.trace_out), "--"]
    child = children.start("dedup", [*command, "dedup", "--config", str(path)], log)
    try:
        if not _wait_line(log, '"dedup.recovered"', 1, 180):
            raise RuntimeError(f"dedup worker did not start; see {log}")
        time.sleep(5)
        idle = h.rss_bytes(child.pid)
        started = time.monotonic()
        steps: list[tuple[int, int]] = [(0, idle)]
        per_step = args.keys // args.steps
        for step in range(1, args.steps + 1):
            asyncio.run(fill_raw(bootstrap, f"{prefix}.raw", per_step, first=(step - 1) * per_step))
            deadline = time.monotonic() + args.timeout
            while asyncio.run(clean_total(bootstrap, f"{prefix}.clean")) < step * per_step:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dedup worker did not forward {step * per_step} keys")
                time.sleep(1)
            time.sleep(2)
            steps.append((step * per_step, h.rss_bytes(child.pid)))
            print(f"  dedup: {step * per_step} keys, RSS {steps[-1][1] / MIB:.1f} MiB", flush=True)
        took = time.monotonic() - started
        if args.trace:
            _dump_trace(args.trace_out)
        return steps, took
    finally:
        child.stop()


def _dump_trace(out: Path) -> None:
    out.unlink(missing_ok=True)
    out.with_suffix(".trigger").touch()
    deadline = time.monotonic() + 120
    while out.with_suffix(".trigger").exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if out.exists():
        print(f"  tracemalloc, largest live allocation sites ({out}):")
        print("\n".join(out.read_text().splitlines()[:40]))


async def _ensure(path: Path) -> None:
    from ccstream.config import load
    from ccstream.topics import TopicSpec, contract_topics, ensure_topics

    config = load(path)
    # one raw partition, made before the worker starts (it would create six): one filter
    specs = [TopicSpec(s.name, 1, s.replication_factor, s.configs)
             for s in contract_topics(config)]
    await ensure_topics(config.kafka.bootstrap_servers, specs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", default="1,100,1000")
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--steps", type=int, default=4, help="fills of keys/steps each")
    parser.add_argument("--skip-dedup", action="store_true")
    parser.add_argument("--trace", action="store_true",
                        help="run the dedup worker under tracemalloc (slower) and dump its top "
                        "allocation sites at the end")
    parser.add_argument("--trace-out", type=Path,
                        default=Path(__file__).parent / "results" / "dedup_tracemalloc.txt")
    parser.add_argument("--skip-connector", action="store_true")
    parser.add_argument("--role", choices=("driver", "bare"), default="driver")
    parser.add_argument("--hold", type=int, default=0)
    parser.add_argument("--url")
    parser.add_argument("--token-url")
    args = parser.parse_args(argv)
    if args.role == "bare":
        asyncio.run(bare_hold(args))
        return 0
    from ccstream.config import DedupSettings
    from pipeline.bloom import optimal_bits_per_key, policy_for

    h.print_header("memory: connector per idle stream, dedup worker per million keys")
    counts = [int(x) for x in args.streams.split(",")]
    children = h.Children()
    conn: dict[int, int] = {}
    bare: dict[int, int] = {}
    dedup = None
    with h.workdir("bench-memory-") as work, h.kafka_broker(work) as bootstrap:
        logs = h.log_dir("memory")
        print("logs:", logs)
        try:
            _, port = h.start_sim(children, logs, clients=1, rate=0.0,
                                  max_connections=max(counts) + 10)
            for n in ([] if args.skip_connector else counts):
                bare[n] = bare_rss(n, port, logs, children)
                conn[n] = connector_rss(n, bootstrap, port, logs, children)
                print(f"  {n} streams: connector {conn[n] / MIB:.1f} MiB, "
                      f"bare {bare[n] / MIB:.1f} MiB", flush=True)
            if not args.skip_dedup:
                dedup = dedup_rss(args, bootstrap, logs, children)
        finally:
            children.stop_all()
    lo, hi = min(counts), max(counts)
    if args.skip_connector:
        hi = lo
    print(f"\n{'streams':>8} {'connector MiB':>14} {'bare MiB':>9}")
    for n, rss in conn.items():
        print(f"{n:8d} {rss / MIB:14.1f} {bare[n] / MIB:9.1f}")
    if hi > lo:
        per_conn = (conn[hi] - conn[lo]) / (hi - lo)
        per_bare = (bare[hi] - bare[lo]) / (hi - lo)
        print(f"per idle stream: connector {per_conn / 1024:.1f} KiB, bare websockets "
              f"{per_bare / 1024:.1f} KiB; ratio {per_conn / per_bare:.2f}")
        print(f"per 1,000 streams: connector {per_conn * 1000 / MIB:.1f} MiB, bare "
              f"{per_bare * 1000 / MIB:.1f} MiB")
    if dedup is not None:
        steps, took = dedup
        d = DedupSettings()
        policy = policy_for(d.window_s, 3, args.keys * 2, d.false_positive_rate)
        theory = args.keys * optimal_bits_per_key(d.false_positive_rate / 3) / 8
        (_, idle), (held, full) = steps[0], steps[-1]
        first_keys, first_rss = steps[1]
        slope = (full - first_rss) / max(held - first_keys, 1)
        scale = 1_000_000 / args.keys
        print(f"\ndedup worker, {held} keys held in {args.steps} steps (one generation sized "
              f"for them, p={d.false_positive_rate} over {policy.generations} generations), "
              f"{took:.0f} s:")
        print("  " + ", ".join(f"{k} keys {r / MIB:.1f} MiB" for k, r in steps))
        print(f"  filter: theoretical {theory / MIB:.2f} MiB, allocated "
              f"{policy.sizing.bytes / MIB:.2f} MiB (m={policy.sizing.m}, k={policy.sizing.k})")
        print(f"  first step (consumer buffers, allocator, warm-up; not per key): "
              f"{(first_rss - idle) / MIB:.1f} MiB")
        print(f"  per million keys after it: {slope * 1e6 / MIB:.1f} MiB vs theoretical "
              f"{theory * scale / MIB:.2f} MiB; ratio {slope * args.keys / theory:.2f}")
    print("machine after:", h.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
