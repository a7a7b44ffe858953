"""The dedup worker's stalls: how long clean stops at a start, a kill -9, a SIGTERM rolling
restart and a rebalance (a second worker joins, then leaves).

    .venv/bin/python bench/bench_stall.py [--events 3000] [--partitions 6] [--rounds 2]
        [--rate 300] [--scenarios start,kill,sigterm,join,leave] [--instance-id] [--trace]
        [--keep-logs DIR]

State measured: **start-up, recovery and rebalance**, never steady state. One local Apache Kafka
broker (warmed up first: its internal offsets and transaction topics exist before anything is
measured), one raw topic per agent. For each agent, as real worker processes, in turn:

* ``start``: a worker starts on a backlog of N records (its changelog empty): seconds from the
  process start to the first record in clean (``read_committed``), and to clean holding every
  distinct key of the backlog;
* ``kill -9`` (``--rounds`` times): with clean caught up, the worker is killed with SIGKILL, a new
  one started at once (its changelog full, its dead member still in the group) and N more records
  written meanwhile: seconds from the kill (= the new process start) to its first clean record,
  and to caught up;
* ``sigterm`` (rolling restart): records flow at ``--rate`` per second; the worker gets SIGTERM,
  and once it has exited a new one is started;
* ``join`` (rebalance): records flow; a second worker starts (same group, its own
  ``instance_id`` with ``--instance-id``);
* ``leave`` (rebalance): records flow; the second worker gets SIGTERM and does not come back.

For the last three, measured from the event (the signal, the second process start): *flowing
again*, the end of the longest gap between consecutive clean records of any one partition (the
hole a dashboard of that partition's streams shows), that *gap* itself (its length includes the
time since that partition's last record before the event: about one commit interval), and
*caught up*: the first moment clean holds every record written up to 1 s before it.

Each figure is printed with the pass-through agent's of the same run: the same app,
transactions and commit interval, no filter and no changelog ops (hence nothing to recover).
``--instance-id`` gives each worker a static group membership id (``[dedup] instance_id``).
Phases (seconds from the process start, or from the event) come from the workers' own log lines;
``--trace`` adds faust's and aiokafka's INFO lines (group joined, recovery read, worker ready)
and faust's transaction commits to them, and times faust's recovery and fetch calls
(``bench.call`` lines in the logs). Clean's records are counted too: the dedup agent must hold
each key once (``dup`` column), whatever was killed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from bench_dedup_agent import _config, _worker_main

from ccstream import records
from ccstream.procs import tie_to_parent
from ccstream.topics import TopicSpec, ensure_topics

SCENARIOS = ("start", "kill", "sigterm", "join", "leave")
# caught up: clean holds every record written up to this long before (commit interval and the
# tail's poll included)
SLACK_S = 1.0
# (label, logger or None, event prefix, last rather than first): the phase timeline
PHASES: tuple[tuple[str, str | None, str, bool], ...] = (
    ("topics ready", None, "dedup.starting", False),
    ("group joined", None, "Joined group", False),
    ("assigned", None, "Setting newly assigned partitions", False),
    ("producers started", None, "dedup.partitions_assigned", False),
    ("revoked", None, "dedup.partitions_revoked", False),
    ("recovery reads", None, "[^---Recovery]: Restoring state", False),
    ("first marker skip", None, "dedup.recovery_markers_skipped", False),
    ("last marker skip", None, "dedup.recovery_markers_skipped", True),
    ("recovered", None, "dedup.recovered", False),
    ("worker ready", None, "[^---Recovery]: Worker ready", True),
    ("first commit", None, "Done committing transaction", False),
    ("first clean", "bench", "bench.first_clean", False),
    ("caught up", "bench", "bench.caught_up", False),
)


# -- records in, records out ------------------------------------------------------------------
def frame(key: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    stamp = f"2024-01-15T10:00:00.{sum(map(ord, key)) % 1000:03d}Z"
    body = {"eventType": "t", "correlationId": key, "timestamp": stamp}
    return orjson.dumps(body), [(records.H_DEDUP_KEY, f"t|{key}|{stamp}".encode())]


async def produce(producer: AIOKafkaProducer, topic: str, name: str, count: int,
                  written: dict[bytes, float], rate: float | None = None) -> None:
    """``count`` records (a fifth copies of their neighbour); each key's first send time."""
    started = time.monotonic()
    for i in range(count):
        key = f"{name}{i if i % 5 else max(0, i - 1)}"
        value, headers = frame(key)
        written.setdefault(key.encode(), time.monotonic())
        await producer.send(topic, value, key=key.encode(), headers=headers)
        if rate:
            ahead = started + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await producer.flush()


@dataclass
class CleanTail:
    """Every record of the clean topic (``read_committed``): when each key first arrived
    (monotonic s) and on which partition, and how many records in all."""

    bootstrap: str
    topic: str
    partitions: int
    arrived: dict[bytes, tuple[float, int]] = field(default_factory=dict)
    total: int = 0

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                    isolation_level="read_committed",
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([TopicPartition(self.topic, p) for p in range(self.partitions)])
            while True:
                for tp, batch in (await consumer.getmany(timeout_ms=50)).items():
                    now = time.monotonic()
                    self.total += len(batch)
                    for record in batch:
                        self.arrived.setdefault(record.key, (now, tp.partition))
        finally:
            await consumer.stop()

    async def until(self, keys: dict[bytes, float], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while any(k not in self.arrived for k in keys):
            if time.monotonic() > deadline:
                missing = sum(k not in self.arrived for k in keys)
                raise TimeoutError(f"clean lacks {missing} of {len(keys)} keys")
            await asyncio.sleep(0.05)

    def first_after(self, keys: dict[bytes, float], after: float) -> float:
        return min(t for k in keys if (t := self.arrived[k][0]) >= after)


def flow_figures(tail: CleanTail, written: dict[bytes, float], event: float
                 ) -> tuple[float, float, float]:
    """(flowing again, longest gap, caught up), seconds from ``event`` (see the docstring)."""
    by_partition: dict[int, list[float]] = {}
    for key in written:
        at, partition = tail.arrived[key]
        by_partition.setdefault(partition, []).append(at)
    end, gap = event, 0.0
    for times in by_partition.values():
        times.sort()
        for before, after in itertools.pairwise(times):
            if after > event and after - before > gap:
                end, gap = after, after - before
    # caught up: the first arrival T after the stall with every key written by T - SLACK_S
    # in clean by T
    order = sorted(written, key=written.__getitem__)
    sent = [written[k] for k in order]
    latest, prefix = float("-inf"), []
    for key in order:
        latest = max(latest, tail.arrived[key][0])
        prefix.append(latest)
    caught = end
    for at in sorted(a for k in written if (a := tail.arrived[k][0]) >= end):
        j = bisect.bisect_right(sent, at - SLACK_S)
        if j == 0 or prefix[j - 1] <= at:
            caught = at
            break
    return end - event, gap, caught - event


# -- the workers ------------------------------------------------------------------------------
def mark(log: Path, event: str, monotonic: float | None = None) -> None:
    """A line of the benchmark's own in a worker's log, on the same clock as its lines
    (``monotonic``: when it happened, if not now)."""
    now = time.time() - (0.0 if monotonic is None else time.monotonic() - monotonic)
    ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    with log.open("ab") as f:
        f.write(orjson.dumps({"ts": ts, "logger": "bench", "event": event}) + b"\n")


@dataclass
class Worker:
    role: str
    config: Path
    log: Path
    trace: bool
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    lines: int = 0  # the log's length when this process started
    expected: bool = False  # its exit was asked for
    restarts: int = 0  # exits with status 70 (the worker stopped itself): started again
    crashes: int = 0  # other exits nobody asked for: not started again

    async def supervise(self) -> None:
        """What ``ccstream dedup``'s supervisor does: a worker that stopped itself (exit 70)
        is started again (after 0.5 s); one that exited otherwise stays down."""
        while True:
            await asyncio.sleep(0.05)
            code = None if self.proc is None or self.expected else self.proc.poll()
            if code == 70:
                self.restarts += 1
                mark(self.log, "bench.exit_70")
                await asyncio.sleep(0.5)
                self.start()
            elif code is not None:
                self.crashes += 1
                self.expected = True
                mark(self.log, f"bench.crashed_{code}")

    def start(self) -> float:
        self.expected = False
        self.lines = len(self.log.read_text(errors="replace").splitlines()) \
            if self.log.exists() else 0
        mark(self.log, "bench.process_start")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", self.role, "--config", str(self.config),
             *(["--trace"] if self.trace else [])],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            preexec_fn=tie_to_parent,  # noqa: PLW1509 - prctl only, no locks taken
            env={**os.environ, "CCSTREAM_SUPERVISED_CHILD": "1"}, cwd=Path(__file__).parent)
        return self.started

    def signal(self, sig: signal.Signals) -> float:
        assert self.proc is not None
        self.expected = True
        mark(self.log, f"bench.{sig.name}")
        at = time.monotonic()
        self.proc.send_signal(sig)
        return at

    async def exited(self, within_s: float = 30.0) -> float:
        assert self.proc is not None
        deadline = time.monotonic() + within_s
        while self.proc.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return time.monotonic()

    def kill(self) -> None:
        self.expected = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def phases(log: Path, since_line: int, origin: float) -> dict[str, float]:
    """Seconds from ``origin`` (epoch) of each phase line after ``since_line``."""
    firsts: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines()[since_line:]:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        event, logger = str(doc.get("event", "")), doc.get("logger")
        if not isinstance(doc.get("ts"), str):
            continue
        at = datetime.fromisoformat(doc["ts"]).timestamp()
        if event.startswith("[^---Recovery]: Worker ready"):
            firsts.pop("first commit", None)  # the first commit once flowing again
        for label, want_logger, prefix, last in PHASES:
            if event.startswith(prefix) and (want_logger is None or want_logger == logger) \
                    and (last or label not in firsts):
                firsts[label] = at
    return {label: round(firsts[label] - origin, 2) for label, *_ in PHASES
            if label in firsts}


def epoch(monotonic: float) -> float:
    return time.time() - (time.monotonic() - monotonic)


def write_config(path: Path, args: argparse.Namespace, bootstrap: str, prefix: str,
                 app: str, instance: str | None) -> None:
    _config(path, bootstrap, prefix, app, args.partitions)
    # the product's session timeout (bench_dedup_agent's config shortens it), and the static
    # membership id when asked
    dedup = f"[dedup]\nsession_timeout_s = {args.session_timeout}\n"
    if instance:
        dedup += f'instance_id = "{instance}"\n'
    path.write_text(path.read_text().replace("[dedup]\n", dedup).replace(
        "session_timeout_s = 3.0\n", ""))


# -- the scenarios ----------------------------------------------------------------------------
@dataclass
class Run:
    """One agent's run: its topic, tail, producer and workers."""

    role: str
    args: argparse.Namespace
    raw: str
    tail: CleanTail
    producer: AIOKafkaProducer
    worker: Worker
    second: Worker
    written: dict[bytes, float] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    batches: int = 0
    restarts_seen: int = 0
    crashes_seen: int = 0

    def row(self, scenario: str, figures: dict[str, float], ph: dict[str, float],
            **more: Any) -> None:
        restarts = self.worker.restarts + self.second.restarts
        crashes = self.worker.crashes + self.second.crashes
        self.rows.append({"agent": self.role, "scenario": scenario, **figures, "phases": ph,
                          "exit70": restarts - self.restarts_seen,
                          "crashed": crashes - self.crashes_seen, **more})
        self.restarts_seen, self.crashes_seen = restarts, crashes

    async def backlog(self) -> dict[bytes, float]:
        self.batches += 1
        keys: dict[bytes, float] = {}
        await produce(self.producer, self.raw, f"b{self.batches}-", self.args.events, keys)
        self.written.update(keys)
        return keys

    async def start(self) -> None:
        keys = await self.backlog()
        started = self.worker.start()
        await self.tail.until(keys, self.args.timeout)
        self._backlog_row("start", keys, started)

    async def kill(self) -> None:
        # the backlog is written once the worker is dead (while the new one starts), so that
        # every record of it waits for the new one
        self.worker.kill()
        started = self.worker.start()
        keys = await self.backlog()
        await self.tail.until(keys, self.args.timeout)
        self._backlog_row("kill -9", keys, started)

    def _backlog_row(self, scenario: str, keys: dict[bytes, float], started: float) -> None:
        first = self.tail.first_after(keys, started)
        done = max(self.tail.arrived[k][0] for k in keys)
        mark(self.worker.log, "bench.first_clean", first)
        mark(self.worker.log, "bench.caught_up", done)
        self.row(scenario, {"first_clean_s": first - started, "caught_up_s": done - started},
                 phases(self.worker.log, self.worker.lines, epoch(started)))

    async def flowing(self, scenario: str, act: Any, *logs: Worker) -> None:
        """Records flow at ``--rate`` from 3 s before ``act()`` (which returns the event's
        time) until 8 s after it, then the figures of the event; phases from ``logs`` (the
        second worker's prefixed ``2:``)."""
        self.batches += 1
        keys: dict[bytes, float] = {}
        count = int(self.args.rate * (3.0 + 8.0 + self.args.flow_s))
        feed = asyncio.create_task(produce(self.producer, self.raw, f"f{self.batches}-",
                                           count, keys, self.args.rate))
        await asyncio.sleep(3.0)
        lines = [len(w.log.read_text(errors="replace").splitlines()) if w.log.exists() else 0
                 for w in logs]
        event, extra = await act()
        await feed
        self.written.update(keys)
        await self.tail.until(keys, self.args.timeout)
        again, gap, caught = flow_figures(self.tail, keys, event)
        ph: dict[str, float] = {}
        for w, since in zip(logs, lines, strict=True):
            mark(w.log, "bench.first_clean", event + again)
            mark(w.log, "bench.caught_up", event + caught)
            name = "2:" if w is self.second else ""
            ph.update({f"{name}{k}": v for k, v in phases(w.log, since, epoch(event)).items()
                       if not (name and k in ("first clean", "caught up"))})
        self.row(scenario, {"first_clean_s": again, "gap_s": gap, "caught_up_s": caught},
                 ph, **extra)

    async def sigterm(self) -> None:
        async def act() -> tuple[float, dict[str, Any]]:
            at = self.worker.signal(signal.SIGTERM)
            exited = await self.worker.exited()
            self.worker.start()
            return at, {"stop_s": round(exited - at, 2)}

        await self.flowing("SIGTERM restart", act, self.worker)

    async def join(self) -> None:
        async def act() -> tuple[float, dict[str, Any]]:
            return self.second.start(), {}

        await self.flowing("2nd worker joins", act, self.worker, self.second)
        if self.worker.crashes:  # the first one died meanwhile (not started again): it is
            self.worker.start()  # the one left running after the 2nd leaves

    async def leave(self) -> None:
        async def act() -> tuple[float, dict[str, Any]]:
            at = self.second.signal(signal.SIGTERM)
            exited = await self.second.exited()
            return at, {"stop_s": round(exited - at, 2)}

        await self.flowing("2nd worker leaves", act, self.worker, self.second)


async def run_agent(role: str, args: argparse.Namespace, bootstrap: str, work: Path,
                    index: int) -> list[dict[str, Any]]:
    prefix, app = f"stall{index}", f"{role}-{index}"
    raw, clean = f"{prefix}.raw", f"{prefix}.{app}.out"
    configs = [work / f"{role}.toml", work / f"{role}-2.toml"]
    for n, path in enumerate(configs):
        instance = f"{role}-bench-{n}" if args.instance_id else None
        write_config(path, args, bootstrap, prefix, app, instance)
    # clean exists before the worker starts, so that the tail's metadata knows it from the
    # start (a consumer assigned to a topic that appears later only sees it at its next
    # metadata refresh: a stall of the benchmark's own, not of the worker)
    await ensure_topics(bootstrap, [TopicSpec(raw, args.partitions, 1, {}),
                                    TopicSpec(clean, args.partitions, 1, {})])
    tail = CleanTail(bootstrap, clean, args.partitions)
    tailing = asyncio.create_task(tail.run())
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    run = Run(role, args, raw, tail, producer,
              Worker(role, configs[0], work / f"{role}.log", args.trace),
              Worker(role, configs[1], work / f"{role}-2.log", args.trace))
    supervisors = [asyncio.create_task(w.supervise()) for w in (run.worker, run.second)]
    try:
        for scenario in args.scenarios:
            if scenario == "start" or run.worker.proc is None:
                await run.start()
            try:
                if scenario == "kill":
                    for _ in range(args.rounds):
                        await run.kill()
                elif scenario != "start":
                    await getattr(run, scenario)()
            except TimeoutError as err:  # reported as such; the next scenarios go on
                run.row(scenario, {"first_clean_s": float("nan"), "caught_up_s": float("nan")},
                        {}, failed=str(err))
                run.worker.kill()
                run.second.kill()
                run.worker.start()
        await asyncio.sleep(2.0)  # the last commits: clean holds all it will hold
        for r in run.rows:
            r["dup"] = tail.total - len(tail.arrived) if role == "dedup" else None
    finally:
        for task in (*supervisors, tailing):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run.worker.kill()
        run.second.kill()
        await producer.stop()
    return run.rows


async def warm_up(bootstrap: str) -> None:
    """Create the broker's internal topics (``__consumer_offsets``, ``__transaction_state``:
    50 partitions each) before anything is measured: the first agent paid for them."""
    topic = "stall.warmup"
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1, {})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="stall-warmup")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"x")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id="stall-warmup",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: 1})
    finally:
        await consumer.stop()


# -- output -------------------------------------------------------------------------------------
def report(rows: list[dict[str, Any]]) -> None:
    print(f"\n{'agent':12} {'scenario':18} {'first/again s':>13} {'gap s':>6} "
          f"{'caught up s':>11} {'stop s':>6} {'dup':>4} {'exit 70':>7} {'crashed':>7}")
    for r in rows:
        gap = f"{r['gap_s']:6.2f}" if "gap_s" in r else f"{'':6}"
        stop = f"{r['stop_s']:6.2f}" if "stop_s" in r else f"{'':6}"
        dup = "" if r.get("dup") is None else str(r["dup"])
        print(f"{r['agent']:12} {r['scenario']:18} {r['first_clean_s']:13.2f} {gap} "
              f"{r['caught_up_s']:11.2f} {stop} {dup:>4} {r['exit70']:7} {r['crashed']:7}"
              + (f"  FAILED: {r['failed']}" if "failed" in r else ""))
    print("\nphases (s from the process start; for flowing scenarios from the event):")
    for r in rows:
        print(f"  {r['agent']:12} {r['scenario']:18} {r['phases']}")
    print()
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        base = [r["first_clean_s"] for r in rows
                if r["agent"] == "passthrough" and r["scenario"] == scenario]
        ours = [r["first_clean_s"] for r in rows
                if r["agent"] == "dedup" and r["scenario"] == scenario]
        if base and ours:
            b, o = max(base), max(ours)
            print(f"{scenario}: dedup first clean / flowing again {o:.2f} s (worst) vs "
                  f"pass-through {b:.2f} s = {o / b:.2f}x; target <= 5 s")


async def main_async(args: argparse.Namespace) -> None:
    from _harness import kafka_broker, machine, print_header

    print_header("dedup worker stalls (state measured: start-up, recovery, rebalance)")
    work = Path(tempfile.mkdtemp(prefix="ccstream-stall-"))
    try:
        rows = []
        with kafka_broker(work) as bootstrap:
            await warm_up(bootstrap)
            for index, role in enumerate(("passthrough", "dedup")):
                rows += await run_agent(role, args, bootstrap, work, index)
    finally:
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("kafka"))
        shutil.rmtree(work, ignore_errors=True)
    report(rows)
    print(machine())


# -- the worker role ------------------------------------------------------------------------------
def _trace_libraries() -> None:
    """Let faust's, mode's and aiokafka's INFO lines (and faust's transaction commits) through
    ccstream's logging in this worker process, and time faust's recovery and fetch calls: the
    phase timeline's raw material."""
    import logging

    from ccstream import logs

    configure = logs.configure

    def traced(*a: Any, **kw: Any) -> None:
        configure(*a, **kw)
        for name in ("aiokafka", "faust", "mode", "pipeline", "bench"):
            logging.getLogger(name).setLevel(logging.INFO)
        logging.getLogger("faust.transport.drivers.aiokafka").setLevel(logging.DEBUG)

    logs.configure = traced
    _time_calls()


def _time_calls() -> None:
    """``bench.call`` lines: how long faust's recovery and fetch calls take."""
    import functools
    import logging

    from faust.transport.drivers import aiokafka as driver

    from pipeline.dedup import worker

    log = logging.getLogger("bench.trace")
    targets = [(driver.Consumer, "earliest_offsets"), (driver.Consumer, "highwaters"),
               (driver.Consumer, "seek_wait"), (driver.Consumer, "perform_seek"),
               (driver.AIOKafkaConsumerThread, "getmany"),
               (driver.Producer, "maybe_begin_transaction"),
               (driver.Producer, "commit_transactions")]
    for owner, name in targets:
        original = getattr(owner, name)

        def wrap(original: Any = original, name: str = name) -> Any:
            @functools.wraps(original)
            async def timed(*a: Any, **kw: Any) -> Any:
                t0 = time.monotonic()
                result = await original(*a, **kw)
                seconds = time.monotonic() - t0
                if name != "getmany" or seconds > 0.2 or result:
                    size = len(result) if isinstance(result, dict) else None
                    shown = [len(x) if isinstance(x, set | dict | list) else x
                             for x in a[1:]][:2]
                    log.info("bench.call %s %.3f s args=%s result=%s", name, seconds, shown,
                             size)
                return result
            return timed

        setattr(owner, name, wrap())
    prepare = worker.prepare

    async def timed_prepare(config: Any) -> Any:
        t0 = time.monotonic()
        try:
            return await prepare(config)
        finally:
            log.warning("bench.call prepare %.3f s", time.monotonic() - t0)

    worker.prepare = timed_prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="records per backlog")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2, help="kill -9 restarts per agent")
    parser.add_argument("--rate", type=float, default=300.0,
                        help="records/s written during the flowing scenarios")
    parser.add_argument("--flow-s", type=float, default=0.0,
                        help="how much longer than 8 s records flow after the event")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        type=lambda s: [x for x in s.split(",") if x],
                        help=f"comma-separated, in order, of {','.join(SCENARIOS)}")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--instance-id", action="store_true")
    parser.add_argument("--session-timeout", type=float, default=10.0,
                        help="[dedup] session_timeout_s (default: the product's, 10)")
    parser.add_argument("--trace", action="store_true",
                        help="faust's and aiokafka's INFO lines in the worker logs (timeline)")
    parser.add_argument("--keep-logs", type=Path)
    parser.add_argument("--role", choices=("dedup", "passthrough"))
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.role:
        if args.trace:
            _trace_libraries()
        return _worker_main(args.role, args.config)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
