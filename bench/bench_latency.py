"""Steady-state latency: platform emit -> raw topic -> clean topic, at a steady rate.

    .venv/bin/python bench/bench_latency.py [--rate 2000] [--streams 4] [--partitions 6]
        [--seconds 30] [--steady-lag 1.0] [--steady-for 10] [--agents passthrough,dedup]
        [--commit-interval S] [--linger-ms MS] [--profile-dedup]

State measured: **steady state only**. Set-up (real processes on this machine): one Apache Kafka
broker, the simulator (its own process, ``--streams`` Genesys tenants sharing ``--rate``
events/s, 1 % live duplicates), ``ccstream connect``, and one worker at a time per agent: the
pass-through agent (the same faust app and transactional path, no filter, no changelog) and
then the real dedup agent (``bench_dedup_agent.py``'s roles), each with its own group and clean
topic. Settings are the configuration's defaults unless given (only the filter is sized for an
hour, as ``devtools.e2e`` does). Each worker's group is committed at raw's end before it starts,
so it has no backlog to drain, and the window opens only once the clean lag (now minus the emit
time of the newest record in clean) has stayed under ``--steady-lag`` for ``--steady-for``
seconds; the output says so, and the largest lag inside the window.

Latency of an event = the reader's wall clock when it gets the record - the event's emit time
(the simulator's timestamp, carried in the dedup key; the processes share one clock). The reader
(this process) uses ``fetch_max_wait_ms=5`` so that its own long-poll does not count:

* **emit -> raw** (read_uncommitted): the connector's share, the baseline of the same window;
* **emit -> clean** (``read_committed``, what a downstream consumer sees): the whole path.

The transaction commit path is measured inside the worker (the bench's worker role wraps
aiokafka's transaction calls and the agent's lock on them; nothing of the product is changed):
per partition, the offsets' round trips (AddOffsetsToTxn + TxnOffsetCommit) and the commit
(EndTxn, after the producer's flush); per commit round (faust commits every
``commit_interval_s``), its duration and spacing; how long the agent waited for a partition's
transaction lock (a commit holds it); the broker's "retry later" answers; and from the reader,
the time from a partition's commit to its records reaching a ``read_committed`` reader.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h

from ccstream.records import H_DEDUP_KEY, header
from ccstream.timefmt import parse_rfc3339 as parse_timestamp

PREFIX = "bench.latency"


# -- the worker role: the agent with its transaction calls traced ------------------------------
def install_trace(path: Path) -> None:
    """Append one line per transaction call, commit round and agent lock wait to ``path``:
    ``kind id start end`` (wall clock seconds). Wraps aiokafka's and the bench's own calls."""
    import aiokafka
    from aiokafka.producer import sender
    from faust.transport.consumer import TransactionManager

    from pipeline import faust_compat

    out = path.open("a", buffering=1)

    def emit(kind: str, ident: Any, t0: float, t1: float) -> None:
        out.write(f"{kind} {ident} {t0:.6f} {t1:.6f}\n")

    producer_type: Any = aiokafka.AIOKafkaProducer
    for name in ("send_offsets_to_transaction", "commit_transaction"):
        def wrap(orig: Any, name: str = name) -> Any:
            async def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
                t0 = time.time()
                try:
                    return await orig(self, *args, **kwargs)
                finally:
                    emit(name, self._txn_manager.transactional_id, t0, time.time())
            return traced
        setattr(producer_type, name, wrap(getattr(producer_type, name)))

    manager: Any = TransactionManager
    round_commit = manager.commit

    async def commit(self: Any, offsets: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.time()
        try:
            return await round_commit(self, offsets, *args, **kwargs)
        finally:
            emit("round", len(offsets), t0, time.time())
    manager.commit = commit

    for handler in ("AddPartitionsToTxnHandler", "AddOffsetsToTxnHandler",
                    "TxnOffsetCommitHandler", "EndTxnHandler"):
        klass: Any = getattr(sender, handler)

        def wrap_response(orig: Any, handler: str = handler) -> Any:
            def traced(self: Any, response: Any) -> Any:
                backoff = orig(self, response)
                if backoff is not None:
                    now = time.time()
                    emit("retry", handler, now, now + backoff)
                return backoff
            return traced
        klass.handle_response = wrap_response(klass.handle_response)

    from pipeline.dedup.app import DedupAgent

    handle = DedupAgent.handle

    async def traced_handle(self: Any, events: Any) -> None:
        t0 = time.time()
        oldest = min((e.message.timestamp for e in events), default=t0)
        try:
            await handle(self, events)
        finally:
            # the batch's size and its oldest record's age (raw append -> agent), in ms
            emit("batch", f"{len(events)}:{(t0 - oldest) * 1000:.1f}", t0, time.time())
    DedupAgent.handle = traced_handle  # type: ignore[method-assign]

    transaction = faust_compat.transaction

    def traced_transaction(app: Any, topic: str, partition: int) -> Any:
        found = transaction(app, topic, partition)
        return None if found is None else (found[0], _TimedLock(found[1], partition, emit))
    faust_compat.transaction = traced_transaction


class _TimedLock:
    """The agent's view of a partition's transaction lock, timing the wait for it."""

    def __init__(self, lock: asyncio.Lock, partition: int, emit: Any) -> None:
        self.lock, self.partition, self.emit = lock, partition, emit

    async def __aenter__(self) -> None:
        t0 = time.time()
        await self.lock.acquire()
        self.emit("lock_wait", self.partition, t0, time.time())

    async def __aexit__(self, *_: object) -> None:
        self.lock.release()


def worker_main(role: str, config_file: str, trace: Path) -> int:
    from bench_dedup_agent import _worker_main

    install_trace(trace)
    return _worker_main(role, config_file)


# -- set-up -------------------------------------------------------------------------------------
def config_text(args: argparse.Namespace, bootstrap: str, port: int, agent: str) -> str:
    from devtools.e2e import render_toml

    kafka: dict[str, Any] = {"bootstrap_servers": bootstrap, "partitions": args.partitions}
    dedup: dict[str, Any] = {"app_id": f"{PREFIX}-{agent}", "window_s": 3600.0,
                             "expected_events_per_window": 1_000_000}
    if args.linger_ms is not None:
        kafka["linger_ms"] = args.linger_ms
    if args.commit_interval is not None:
        dedup["commit_interval_s"] = args.commit_interval
    sections = {
        "kafka": kafka,
        "topics": {"raw": f"{PREFIX}.raw", "clean": f"{PREFIX}.{agent}.clean",
                   "cursors": f"{PREFIX}.cursors", "dlq": f"{PREFIX}.dlq"},
        "dedup": dedup,
        "log": {"level": "INFO", "format": "json"},
    }
    streams = [{
        "name": f"s{i}", "platform": "genesys",
        "url": f"ws://127.0.0.1:{port}/api/v2/analytics/events",
        "token_url": f"http://127.0.0.1:{port}/oauth/token",
        "client_id": f"tenant-{i}", "client_secret": h.client_secret(i)}
        for i in range(args.streams)]
    return render_toml(sections, streams)


async def prepare_agent(path: Path, *, group: bool = True) -> None:
    """The topics exist, and (``group``) the agent's group starts at raw's end: no backlog."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from ccstream.config import load
    from ccstream.topics import contract_topics, ensure_topics

    config = load(path)
    bootstrap = config.kafka.bootstrap_servers
    await ensure_topics(bootstrap, [t for t in contract_topics(config)
                                    if group or t.name != config.topics.clean])
    if not group:
        return
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=config.dedup.app_id,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(config.topics.raw, p) for p in range(config.kafka.partitions)]
        consumer.assign(tps)
        await consumer.commit(dict(await consumer.end_offsets(tps)))
    finally:
        await consumer.stop()


# -- the reader ---------------------------------------------------------------------------------
@dataclass
class Follow:
    """Records read from one topic: (read at, emitted at, partition)."""

    records: list[tuple[float, float, int]] = field(default_factory=list)
    newest_emit: float = 0.0


@dataclass
class Window:
    raw: list[tuple[float, float, int]]
    clean: list[tuple[float, float, int]]
    settled_after_s: float
    max_lag_s: float
    start: float
    end: float
    steady: bool


async def follow(topic: str, isolation: str, bootstrap: str, partitions: int, into: Follow,
                 stop: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                enable_auto_commit=False, fetch_max_wait_ms=5)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batch.items():
                for record in records:
                    key = header(list(record.headers or ()), H_DEDUP_KEY)
                    emitted = parse_timestamp(key.decode().rsplit("|", 1)[1]) if key else None
                    if emitted is not None:
                        into.records.append((now, emitted, tp.partition))
                        into.newest_emit = max(into.newest_emit, emitted)
    finally:
        await consumer.stop()


async def measure(args: argparse.Namespace, bootstrap: str, agent: str, on_window: Any
                  ) -> Window:
    """Follow raw and the agent's clean topic; wait for steady state, then read one window."""
    raw, clean, stop = Follow(), Follow(), asyncio.Event()
    tasks = [asyncio.create_task(follow(f"{PREFIX}.raw", "read_uncommitted", bootstrap,
                                        args.partitions, raw, stop)),
             asyncio.create_task(follow(f"{PREFIX}.{agent}.clean", "read_committed", bootstrap,
                                        args.partitions, clean, stop))]
    try:
        began = time.time()
        calm_since: float | None = None
        steady = True
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            if any(t.done() for t in tasks):
                await asyncio.gather(*tasks)
            lag = now - clean.newest_emit
            calm_since = (calm_since or now) if lag < args.steady_lag else None
            if calm_since is not None and now - calm_since >= args.steady_for:
                break
            if now - began > args.settle_timeout:  # measured anyway, and said so
                steady = False
                break
        start = time.time()
        on_window()
        max_lag = 0.0
        while time.time() - start < args.seconds:
            await asyncio.sleep(0.25)
            max_lag = max(max_lag, time.time() - clean.newest_emit)
        end = time.time()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Window([r for r in raw.records if start <= r[0] < end],
                  [r for r in clean.records if start <= r[0] < end],
                  start - began, max_lag, start, end, steady)


# -- one agent's run ----------------------------------------------------------------------------
@dataclass
class AgentRun:
    agent: str
    window: Window
    cpu: dict[str, float]
    trace: list[tuple[str, str, float, float]]
    load: str


def run_agent(args: argparse.Namespace, children: h.Children, logs: Path, work: Path,
              bootstrap: str, port: int, agent: str, others: Sequence[h.Child]) -> AgentRun:
    path = work / f"{agent}.toml"
    path.write_text(config_text(args, bootstrap, port, agent))
    asyncio.run(prepare_agent(path))
    trace = logs / f"{agent}.trace"
    trace.unlink(missing_ok=True)
    worker = children.start(agent, [sys.executable, __file__, "--worker", agent, "--config",
                                    str(path), "--trace", str(trace)], logs / f"{agent}.log")
    watched = [*others, worker]
    cpu0: dict[str, float] = {}
    spy: list[h.Child] = []

    def on_window() -> None:
        cpu0.update({c.name: h.cpu_seconds(c.pid) for c in watched})
        if args.profile_dedup and agent == "dedup":
            spy.append(h.start_py_spy(children, worker.pid, args.seconds, args.profile_out))

    try:
        window = asyncio.run(measure(args, bootstrap, agent, on_window))
        span = window.end - window.start
        cpu = {c.name: (h.cpu_seconds(c.pid) - cpu0[c.name]) / span for c in watched}
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        for s in spy:
            s.popen.wait(60)
    finally:
        worker.stop()
    return AgentRun(agent, window, cpu, read_trace(trace, window.start, window.end), load)


def read_trace(path: Path, start: float, end: float) -> list[tuple[str, str, float, float]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            kind, ident, t0, t1 = line.split()
            if start <= float(t0) < end:
                out.append((kind, ident, float(t0), float(t1)))
    return out


# -- reporting ----------------------------------------------------------------------------------
def stats(values: Sequence[float]) -> str:
    if not values:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    return (f"{h.percentile(values, 50):8.1f} {h.percentile(values, 99):8.1f} "
            f"{max(values):8.1f}")


def report(args: argparse.Namespace, run: AgentRun) -> None:
    w, span = run.window, run.window.end - run.window.start
    state = (f"steady: clean lag < {args.steady_lag:g} s for {args.steady_for:g} s before "
             f"the window (settled {w.settled_after_s:.1f} s after the worker started)"
             if w.steady else f"NOT STEADY: clean lag not < {args.steady_lag:g} s for "
             f"{args.steady_for:g} s within {args.settle_timeout:g} s (figures mix states)")
    print(f"\n== {run.agent} agent: {state}; largest clean lag in the window "
          f"{w.max_lag_s:.2f} s; load average {run.load}")
    print(f"{'stage':34} {'records':>8} {'ev/s':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for label, rows in (("emit -> raw (connector, baseline)", w.raw),
                        ("emit -> clean (whole path)", w.clean)):
        ms = [(read - emit) * 1000 for read, emit, _ in rows]
        print(f"{label:34} {len(rows):8d} {len(rows) / span:6.0f} {stats(ms)}")
    report_commits(run, span)
    print("CPU share in the window: " + ", ".join(f"{k} {100 * v:.0f} %"
                                                  for k, v in run.cpu.items()))


def report_commits(run: AgentRun, span: float) -> None:
    by_kind: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for kind, ident, t0, t1 in run.trace:
        by_kind[kind].append((ident, t0, t1))
    rounds = sorted(by_kind["round"], key=lambda r: r[1])
    print(f"{'commit path (ms)':34} {'count':>8} {'/s':>6} {'p50':>8} {'p99':>8} {'max':>8}")

    def line(label: str, values: Sequence[float]) -> None:
        print(f"{label:34} {len(values):8d} {len(values) / span:6.1f} {stats(values)}")

    line("round: all partitions committed", [(t1 - t0) * 1000 for _, t0, t1 in rounds])
    line("round start to next round start",
         [(b[1] - a[1]) * 1000 for a, b in itertools.pairwise(rounds)])

    def ms(kind: str) -> list[float]:
        return [(t1 - t0) * 1000 for _, t0, t1 in by_kind[kind]]

    line("per partition: offsets to txn", ms("send_offsets_to_transaction"))
    line("per partition: EndTxn (commit)", ms("commit_transaction"))
    waits = ms("lock_wait")
    batches = by_kind["batch"]
    line("agent: handling one batch", [(t1 - t0) * 1000 for _, t0, t1 in batches])
    line("agent: oldest record of a batch, age", [float(i.split(":")[1]) for i, _, _ in batches])
    sizes = [float(i.split(":")[0]) for i, _, _ in batches]
    print(f"{'':34} events per batch p50 {h.percentile(sizes, 50) if sizes else 0:.0f}, "
          f"max {max(sizes, default=0):.0f}")
    line("agent waits for a txn lock", waits)
    print(f"{'':34} agent blocked {sum(waits) / span / 10:.1f} % of the window")
    retries: dict[str, int] = defaultdict(int)
    for ident, _, _ in by_kind["retry"]:
        retries[ident] += 1
    if retries:
        print("broker 'retry later' answers: " + ", ".join(f"{k} {v}"
                                                         for k, v in sorted(retries.items())))
    visible = commit_to_visible(by_kind["commit_transaction"], run.window.clean)
    line("commit end -> read_committed", visible)


def commit_to_visible(commits: Sequence[tuple[str, float, float]],
                      clean: Sequence[tuple[float, float, int]]) -> list[float]:
    """Per clean record: its arrival at the reader minus the end of the last commit of its
    partition's transaction before that arrival (the commit that made it visible)."""
    ends: dict[int, list[float]] = defaultdict(list)
    for ident, _, t1 in commits:
        ends[int(ident.rsplit("-", 1)[1])].append(t1)
    for values in ends.values():
        values.sort()
    out = []
    for read, _, partition in clean:
        found = ends.get(partition, [])
        i = bisect.bisect_right(found, read)
        if i:
            out.append((read - found[i - 1]) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s in total")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--partitions", type=int, default=6,
                        help="[kafka] partitions of raw and clean (6 = the config default)")
    parser.add_argument("--seconds", type=float, default=30.0, help="the measuring window")
    parser.add_argument("--steady-lag", type=float, default=1.0,
                        help="steady: clean lag (s) below this ...")
    parser.add_argument("--steady-for", type=float, default=10.0,
                        help="... for this many seconds before the window")
    parser.add_argument("--settle-timeout", type=float, default=240.0)
    parser.add_argument("--agents", default="passthrough,dedup")
    parser.add_argument("--commit-interval", type=float,
                        help="[dedup] commit_interval_s (default: the configuration's)")
    parser.add_argument("--linger-ms", type=float,
                        help="[kafka] linger_ms (default: the configuration's)")
    parser.add_argument("--profile-dedup", action="store_true",
                        help="py-spy the dedup worker during its window")
    parser.add_argument("--profile-out", type=Path,
                        default=Path(__file__).parent / "results" / "dedup_pyspy.txt")
    parser.add_argument("--worker", choices=("passthrough", "dedup"))
    parser.add_argument("--config")
    parser.add_argument("--trace", type=Path)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.config, args.trace)
    return bench(args)


def bench(args: argparse.Namespace) -> int:
    from ccstream.config import load

    h.print_header("steady-state latency: platform emit -> raw (connector) -> clean (worker)")
    children = h.Children()
    runs: list[AgentRun] = []
    with h.workdir("bench-latency-") as work:
        from devtools.devkafka import KafkaCluster

        cluster = KafkaCluster(work / "kafka", size=1, tied=True)
        cluster.start()
        process = cluster.nodes[0].process
        assert process is not None
        broker = h.Child(process, "broker")  # its CPU is counted, it is stopped by the cluster
        bootstrap = cluster.bootstrap_servers
        logs = h.log_dir("latency")
        print("logs:", logs)
        try:
            sim, port = h.start_sim(children, logs, clients=args.streams,
                                    rate=args.rate / args.streams, duplicate_rate=0.01)
            path = work / "connect.toml"
            path.write_text(config_text(args, bootstrap, port, "connect"))
            config = load(path)
            # created here first: a connector and a worker started at the same moment race to
            # create them, and the loser exits
            asyncio.run(prepare_agent(path, group=False))
            connector = children.start("connect", [sys.executable, "-m", "pipeline", "connect",
                                                   "--config", str(path)], logs / "connect.log")
            for agent in args.agents.split(","):
                runs.append(run_agent(args, children, logs, work, bootstrap, port, agent,
                                      [broker, sim, connector]))
        finally:
            children.stop_all()
            cluster.stop()
    print(f"\n{args.streams} Genesys streams, {args.rate:.0f} events/s in total; partitions="
          f"{args.partitions}, dedup commit_interval_s={config.dedup.commit_interval_s}, "
          f"batch_max_events={config.dedup.batch_max_events}, batch_within_s="
          f"{config.dedup.batch_within_s}, kafka linger_ms={config.kafka.linger_ms}; "
          f"{args.seconds:.0f} s measured per agent, in steady state")
    for run in runs:
        report(args, run)
    p99 = {r.agent: h.percentile([(a - e) * 1000 for a, e, _ in r.window.clean], 99)
           for r in runs if r.window.clean}
    if "dedup" in p99:
        base = " / ".join(f"{a} {v:.0f} ms" for a, v in p99.items() if a != "dedup")
        print(f"\np99 emit -> clean: dedup {p99['dedup']:.0f} ms"
              + (f" (pass-through of the same run: {base})" if base else "")
              + f"; target <= 500 ms: {'met' if p99['dedup'] <= 500 else 'MISSED'}"
              + f", end goal 250 ms: {'met' if p99['dedup'] <= 250 else 'not yet'}")
    if args.profile_dedup and args.profile_out.exists():
        print(f"\npy-spy profile of the dedup worker ({args.profile_out}):")
        print(h.summarize_collapsed(args.profile_out))
    print("machine after:", h.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
