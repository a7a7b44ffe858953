"""Ingest: events/s from the simulator through the connector into the raw topic, vs a bare loop.

Set-up (all real, on this machine): one Apache Kafka broker (``devtools.devkafka``), the
simulator in its own process with a pre-emitted backlog of ``--events`` events per stream
(``rate=0``, no live duplicates), and the client under test in a third process:

* **connector**: ``python -m pipeline connect --config FILE`` with default settings (acks=all,
  idempotent, ``linger_ms`` 5); its cursor topic holds ``since`` = one hour ago for each stream,
  so every connection replays the whole backlog as fast as the simulator can send it.
* **bare** (the baseline, no ccstream code): a plain ``websockets`` client per stream, receive
  -> ``orjson.loads`` (the correlation id is the record key, as the contract requires) ->
  ``AIOKafkaProducer.send`` with the same producer settings (acks=all, idempotent, same linger
  and batch size), no headers, no progress tracking.

Both are measured the same way from outside: the sum of the raw topic's end offsets polled every
50 ms; throughput = events / (time the last arrived - time the first arrived); CPU per event =
the client process's CPU seconds (``/proc``) over that same span / events. Rounds alternate
bare/connector so that drifting load hits both. ``--profile`` adds one connector round under
pyinstrument and prints the top frames; ``--spy`` adds one under py-spy (sampling from outside,
so Python calls are not inflated the way pyinstrument's hook inflates them) and prints its
summary (``pip install pyinstrument py-spy`` into .venv; not project dependencies). Profiled
rounds are not among the measured ones.

    .venv/bin/python bench/bench_ingest.py [--events 100000] [--streams 1] [--rounds 2]
        [--profile] [--spy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness as h

from ccstream.records import rfc3339


@dataclass
class Round:
    client: str
    events: int
    seconds: float
    cpu_s: float
    sim_cpu_s: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6


# -- the bare baseline (runs in its own process) -------------------------------------------------
async def bare_loop(args: argparse.Namespace) -> None:
    import aiohttp
    import orjson
    from aiokafka import AIOKafkaProducer
    from websockets.asyncio.client import connect

    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                                enable_idempotence=True, linger_ms=5, max_batch_size=1_048_576)
    await producer.start()

    async def one(index: int) -> None:
        async with aiohttp.ClientSession() as http:
            answer = await http.post(args.token_url, data={"grant_type": "client_credentials"},
                                     headers={"Authorization": aiohttp.encode_basic_auth(
                                         f"tenant-{index}", h.client_secret(index))})
            token = (await answer.json())["access_token"]
        query = urllib.parse.urlencode({"access_token": token, "since": args.since})
        async with connect(f"{args.url}?{query}", max_size=None, compression=None) as ws:
            async for data in ws:
                event = orjson.loads(data)
                if "correlationId" not in event:
                    continue  # heartbeat
                await producer.send(args.topic, value=data if isinstance(data, bytes)
                                    else data.encode(), key=event["correlationId"].encode())

    try:
        await asyncio.gather(*(one(i) for i in range(args.streams)))
    finally:
        await producer.stop()


# -- the driver ---------------------------------------------------------------------------------
async def _offsets_total(consumer: object, partitions: list[object]) -> int:
    ends = await consumer.end_offsets(partitions)  # type: ignore[attr-defined]
    return int(sum(ends.values()))


class ClientExitedError(RuntimeError):
    pass


async def measure(bootstrap: str, topic: str, expected: int, child: h.Child, sim_pid: int,
                  timeout_s: float) -> tuple[float, float, float, int]:
    """Poll the topic's end offsets: (seconds first->last, client CPU s, sim CPU s, events)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ccstream.topics import partition_count

    pid = child.pid
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                count = await partition_count(bootstrap, topic)
                break
            except Exception:
                if child.popen.poll() is not None:
                    raise ClientExitedError(
                        f"{child.name} exited {child.popen.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        first = None
        total = 0
        while total < expected and time.monotonic() < deadline:
            total = await _offsets_total(consumer, partitions)
            now = time.monotonic()
            if first is None and total > 0:
                first = (now, total, h.cpu_seconds(pid), h.cpu_seconds(sim_pid))
            if first is None and child.popen.poll() is not None:
                raise ClientExitedError(f"{child.name} exited {child.popen.returncode}")
            await asyncio.sleep(0.05)
        end = time.monotonic()
        if first is None:
            raise RuntimeError(f"nothing arrived on {topic} in {timeout_s} s")
        cpu = h.cpu_seconds(pid) - first[2]
        sim_cpu = h.cpu_seconds(sim_pid) - first[3]
        return end - first[0], cpu, sim_cpu, total - first[1]
    finally:
        await consumer.stop()


async def write_cursors(bootstrap: str, prefix: str, streams: int, since: str) -> None:
    from aiokafka import AIOKafkaProducer

    from connectors.kafka import cursor_store

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(streams):
            value = cursor_store.encode("genesys", {"since": since}, time.time())
            await producer.send_and_wait(f"{prefix}.cursors", value=value,
                                         key=f"s{i}".encode())
    finally:
        await producer.stop()


def config_text(bootstrap: str, prefix: str, port: int, streams: int) -> str:
    from devtools.e2e import render_toml

    sections = {
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "log": {"level": "INFO", "format": "json"},
    }
    stream_list = [{
        "name": f"s{i}", "platform": "genesys",
        "url": f"ws://127.0.0.1:{port}/api/v2/analytics/events",
        "token_url": f"http://127.0.0.1:{port}/oauth/token",
        "client_id": f"tenant-{i}", "client_secret": h.client_secret(i)} for i in range(streams)]
    return render_toml(sections, stream_list)


def run_round(kind: str, args: argparse.Namespace, bootstrap: str, port: int, sim_pid: int,
              work: Path, index: int, children: h.Children) -> Round | None:
    prefix = f"bench.ingest.{kind}.{index}"
    since = rfc3339(time.time() - 3600)
    expected = args.events * args.streams
    if kind == "bare":
        argv = [sys.executable, __file__, "--role", "bare", "--bootstrap", bootstrap,
                "--topic", f"{prefix}.raw", "--since", since, "--streams", str(args.streams),
                "--url", f"ws://127.0.0.1:{port}/api/v2/analytics/events",
                "--token-url", f"http://127.0.0.1:{port}/oauth/token"]
        asyncio.run(_create_raw(bootstrap, f"{prefix}.raw"))
    else:
        path = work / f"{prefix}.toml"
        path.write_text(config_text(bootstrap, prefix, port, args.streams))
        asyncio.run(_prepare_connector(bootstrap, prefix, path, args.streams, since))
        argv = [sys.executable, "-m", "pipeline", "connect", "--config", str(path)]
        if kind == "profile":
            argv = [sys.executable, "-m", "pyinstrument", "-r", "text", "--show-all",
                    "-o", str(args.profile_out), "-m", "pipeline", "connect",
                    "--config", str(path)]
    child = children.start(kind, argv, h.log_dir("ingest", clear=False) / f"{prefix}.log")
    spy = (h.start_py_spy(children, child.pid, args.timeout, args.spy_out)
           if kind == "spy" else None)
    try:
        seconds, cpu, sim_cpu, events = asyncio.run(
            measure(bootstrap, f"{prefix}.raw", expected, child, sim_pid, args.timeout))
    finally:
        child.stop()
        if spy is not None:  # py-spy writes its file once the process it samples has exited
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.popen.wait(30)
            spy.stop()
    if events < expected * 0.99:
        print(f"  warning: {kind} delivered {events} of {expected} in the window")
    return Round(kind, events, seconds, cpu, sim_cpu)


async def _create_raw(bootstrap: str, topic: str) -> None:
    from ccstream.topics import TopicSpec, ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, 6, 1, {})])


async def _prepare_connector(bootstrap: str, prefix: str, path: Path, streams: int,
                             since: str) -> None:
    from ccstream.config import load
    from ccstream.topics import contract_topics, ensure_topics

    await ensure_topics(bootstrap, contract_topics(load(path)))
    await write_cursors(bootstrap, prefix, streams, since)


def report(rounds: list[Round], args: argparse.Namespace) -> None:
    print(f"\n{'round':10} {'events':>8} {'seconds':>8} {'events/s':>10} {'CPU us/ev':>10} "
          f"{'sim CPU %':>9}")
    for r in rounds:
        print(f"{r.client:10} {r.events:8d} {r.seconds:8.2f} {r.rate:10.0f} "
              f"{r.cpu_us_per_event:10.1f} {100 * r.sim_cpu_s / r.seconds:9.0f}")
    bare = [r for r in rounds if r.client == "bare"]
    conn = [r for r in rounds if r.client == "connector"]
    bare_rate = statistics.median(r.rate for r in bare)
    conn_rate = statistics.median(r.rate for r in conn)
    bare_cpu = statistics.median(r.cpu_us_per_event for r in bare)
    conn_cpu = statistics.median(r.cpu_us_per_event for r in conn)
    print(f"\nmedian events/s: bare {bare_rate:.0f}, connector {conn_rate:.0f}; "
          f"ratio connector/bare = {conn_rate / bare_rate:.2f} (target >= 0.75)")
    print(f"median CPU per event: bare {bare_cpu:.1f} us, connector {conn_cpu:.1f} us; "
          f"ratio = {conn_cpu / bare_cpu:.2f}")
    print("sim CPU % near 100 means the simulator, not the client, set the pace")
    print("machine after:", h.machine())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog per stream")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each client")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-out", type=Path,
                        default=Path(__file__).parent / "results" / "ingest_profile.txt")
    parser.add_argument("--spy", action="store_true")
    parser.add_argument("--spy-out", type=Path,
                        default=Path(__file__).parent / "results" / "ingest_pyspy.txt")
    # bare-role options (the driver starts this file again with --role bare)
    parser.add_argument("--role", choices=("driver", "bare"), default="driver")
    parser.add_argument("--bootstrap")
    parser.add_argument("--topic")
    parser.add_argument("--since")
    parser.add_argument("--url")
    parser.add_argument("--token-url")
    args = parser.parse_args(argv)
    if args.role == "bare":
        asyncio.run(bare_loop(args))
        return 0
    h.print_header("ingest: simulator -> client -> raw topic (acks=all, idempotent)")
    children = h.Children()
    rounds: list[Round] = []
    with h.workdir("bench-ingest-") as work, h.kafka_broker(work) as bootstrap:
        print("logs:", h.log_dir("ingest"))
        try:
            sim, port = h.start_sim(children, work, clients=args.streams, rate=0.0,
                                    backlog=args.events)
            kinds = ["bare", "connector"] * args.rounds
            for index, kind in enumerate(kinds):
                result = run_round(kind, args, bootstrap, port, sim.pid, work, index, children)
                if result is not None:
                    rounds.append(result)
                    print(f"  {kind}: {result.rate:.0f} events/s", flush=True)
            if args.profile:
                args.profile_out.parent.mkdir(exist_ok=True)
                run_round("profile", args, bootstrap, port, sim.pid, work, len(kinds), children)
                print(f"profile of one connector round: {args.profile_out}")
            if args.spy:
                args.spy_out.parent.mkdir(exist_ok=True)
                run_round("spy", args, bootstrap, port, sim.pid, work, len(kinds) + 1,
                          children)
                print(f"py-spy of one connector round: {args.spy_out}")
                print(h.summarize_collapsed(args.spy_out, top=25))
        finally:
            children.stop_all()
    report(rounds, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
