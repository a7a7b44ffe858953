"""Cluster mode's whole-process harness, shared by ``tests/process/test_cluster*.py``.

``running_cluster`` starts a simulator (one tenant per stream, Genesys in single-session mode),
writes one cluster-mode configuration, tails the raw topic and starts ``ccstream connect``
instances; everything is stopped on the way out, processes only by the pid they were started
with. ``Cluster`` is that run: its instances (``Instance``), who runs what (from the instances'
``slot.running`` / ``slot.released`` log lines) and the simulator's per-stream connection
timeline (``sim.owners``). The checks: ``row`` (a chaos-table row), ``cursor_records`` (the
cursor topic read ``read_committed``, in order) and ``position`` / ``steps_back`` (committed
cursors never move backwards).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ccstream.procs import tie_to_parent
from ccstream.timefmt import parse_rfc3339
from devtools.e2e import StreamPlan, render_toml
from devtools.live import TopicTail
from simulator import ClientSpec, SimSettings, Simulator
from simulator.events import decode_cursor


def key(plan: StreamPlan) -> str:
    """The stream's key in the simulator's owners timeline."""
    return f"{plan.platform}/{plan.client_id}"


def ts(doc: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(doc["ts"])).timestamp()


def events(path: Path, names: set[str]) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` whose ``event`` is one of ``names``."""
    out = []
    if not path.exists():
        return out
    for line in path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") in names:
            out.append(doc)
    return out


@dataclass
class Instance:
    """One ``ccstream connect`` process, stopped only through its own pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_wall: float
    paused: bool = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def client_id(self) -> str | None:
        found = events(self.log_path, {"cluster.starting"})
        return str(found[-1]["instance"]) if found else None

    def slots(self) -> dict[int, list[str]]:
        """The slots this process runs now and their streams, from its slot.running /
        slot.released lines."""
        running: dict[int, list[str]] = {}
        for doc in events(self.log_path, {"slot.running", "slot.released"}):
            if doc["event"] == "slot.running":
                running[int(doc["slot"])] = list(doc.get("streams") or [])
            else:
                running.pop(int(doc["slot"]), None)
        return running

    def streams(self) -> set[str]:
        """The streams this process runs now, from its slot.running / slot.released lines."""
        return {name for names in self.slots().values() for name in names}


@dataclass
class Cluster:
    sim: Simulator
    bootstrap: str
    config_path: Path
    log_dir: Path
    env: dict[str, str]
    topics: dict[str, str]
    raw: TopicTail
    plans: Sequence[StreamPlan]
    grace_s: float
    instances: dict[str, Instance] = field(default_factory=dict)
    retired: list[Instance] = field(default_factory=list)
    counter: int = 0

    # -- processes -----------------------------------------------------------------------------
    def start(self, name: str) -> Instance:
        old = self.instances.get(name)
        if old is not None:
            assert not old.alive(), f"{name} still running"
            self.retired.append(old)
        self.counter += 1
        log_path = self.log_dir / f"{name}-{self.counter}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "connect", "--config", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            preexec_fn=tie_to_parent)  # noqa: PLW1509 (dies with pytest, even by kill -9)
        log.close()
        instance = Instance(name, popen, log_path, time.time())
        self.instances[name] = instance
        return instance

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive() and not i.paused]

    async def kill(self, name: str) -> None:
        instance = self.instances[name]
        instance.send(signal.SIGKILL)
        await asyncio.to_thread(instance.popen.wait, 10)

    async def terminate(self, name: str) -> int | None:
        instance = self.instances[name]
        instance.send(signal.SIGTERM)
        try:
            return await asyncio.to_thread(instance.popen.wait, self.grace_s + 3)
        except subprocess.TimeoutExpired:
            instance.send(signal.SIGKILL)
            await asyncio.to_thread(instance.popen.wait, 10)
            return None

    def pause(self, name: str) -> None:
        self.instances[name].send(signal.SIGSTOP)
        self.instances[name].paused = True

    def resume(self, name: str) -> None:
        self.instances[name].send(signal.SIGCONT)
        self.instances[name].paused = False

    async def stop_all(self) -> None:
        for instance in self.instances.values():
            instance.send(signal.SIGCONT)
            instance.send(signal.SIGTERM)
        for instance in self.instances.values():
            try:
                await asyncio.to_thread(instance.popen.wait, self.grace_s + 3)
            except subprocess.TimeoutExpired:
                instance.send(signal.SIGKILL)
                await asyncio.to_thread(instance.popen.wait, 10)

    # -- views ---------------------------------------------------------------------------------
    def owners(self) -> dict[str, list[str]]:
        """stream name -> the live instances running it (from their logs)."""
        found: dict[str, list[str]] = {p.name: [] for p in self.plans}
        for instance in self.live():
            for stream in instance.streams():
                found.setdefault(stream, []).append(instance.name)
        return found

    def one_owner_each(self) -> bool:
        owners = self.owners()
        return all(len(owners[p.name]) == 1 for p in self.plans) and all(
            self.sim.owners.open_now(key(p)) == 1 for p in self.plans)

    async def settle(self, within_s: float = 60.0, quiet_s: float = 1.5) -> float:
        """Until every stream has exactly one owner and one connection, for ``quiet_s``."""
        started = time.monotonic()
        deadline = started + within_s
        calm_since: float | None = None
        while True:
            now = time.monotonic()
            if self.one_owner_each():
                calm_since = calm_since or now
                if now - calm_since >= quiet_s:
                    return now - started
            else:
                calm_since = None
            if now > deadline:
                open_now = {key(p): self.sim.owners.open_now(key(p)) for p in self.plans}
                raise AssertionError(f"not settled within {within_s} s: {self.owners()} "
                                     f"{open_now}")
            await asyncio.sleep(0.1)

    def takeover_s(self, streams: set[str], since: float) -> dict[str, float | None]:
        """Per stream: seconds from ``since`` (monotonic) to its first connection after it."""
        plans = {p.name: p for p in self.plans}
        out: dict[str, float | None] = {}
        for name in streams:
            stream_key = key(plans[name])
            opened = [e.t for e in self.sim.owners.events
                      if e.stream == stream_key and e.delta > 0 and e.t >= since]
            out[name] = round(min(opened) - since, 2) if opened else None
        return out

    def spans(self, start: float, end: float) -> tuple[float, float]:
        """The longest time any stream had no connection, and more than one, in the window."""
        gaps, doubles = zip(*(self.sim.owners.spans(key(p), start, end) for p in self.plans),
                            strict=True)
        return round(max(gaps), 2), round(max(doubles), 2)

    def lost_so_far(self, emitted: dict[str, str]) -> int:
        return sum(1 for k in emitted if k not in self.raw.view.counts)

    def emitted(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for stream in self.sim.ledger.streams.values():
            merged.update(stream.hashes)
        return merged


async def until(predicate: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def row(cluster: Cluster, table: list[dict[str, Any]], name: str,
              emitted_before: dict[str, str], window: tuple[float, float],
              recovery: float | None) -> None:
    """A chaos-table row: events so far, events of before the scenario not in raw yet (after a
    bounded wait), duplicates in raw so far, the slowest takeover; gap and overlap in the name."""
    await until(lambda: cluster.lost_so_far(emitted_before) == 0, 30,
                f"raw holding every event emitted before {name}")
    gap, double = cluster.spans(*window)
    duplicated = sum(1 for n in cluster.raw.view.counts.values() if n > 1)
    # no dedup worker runs in the cluster tests: "duplicated" counts copies in raw (replays
    # the raw contract allows), said in the row so that it is not read as clean duplicates
    table.append({"scenario": f"{name} [gap {gap}s, 2x {double}s, dup in raw]",
                  "events": len(cluster.emitted()), "missing": cluster.lost_so_far(emitted_before),
                  "duplicated": duplicated, "recovery_s": recovery})


@asynccontextmanager
async def running_cluster(bootstrap: str, work: Path, plans: Sequence[StreamPlan], *,
                          prefix: str, connector: Mapping[str, Any], cluster: Mapping[str, Any],
                          grace_s: float, kafka: Mapping[str, Any] | None = None,
                          names: Sequence[str] = ("A", "B", "C"), seed: int = 17,
                          rate: float = 5.0) -> AsyncIterator[Cluster]:
    """A simulator, one cluster-mode configuration over ``plans`` (topics named from
    ``prefix``, group ``<prefix>-connect``), the raw topic's tail and the instances ``names``;
    all stopped on the way out."""
    clients = tuple(ClientSpec(p.client_id, p.secret, platforms=(p.platform,)) for p in plans)
    # no re-sent older NICE events (rewind on resume, live duplicates): CursorProgress folds
    # a re-sent event's older cursor into the resume point, a step back within one owner that
    # is not about ownership; "committed cursors never move back" is checked for ownership
    settings = SimSettings(clients=clients, seed=seed, rate=rate, single_session=("genesys",),
                           nice_rewind_max=0, duplicate_rate=0.0)
    async with Simulator(settings) as sim:
        topics = {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                  "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq",
                  "slots": f"{prefix}.slots"}
        urls = {platform: sim.stream_url(platform) for platform in ("genesys", "nice")}
        streams = [{"name": p.name, "platform": p.platform, "url": urls[p.platform],
                    "token_url": sim.token_url, "client_id": p.client_id,
                    "client_secret_env": p.secret_env, "ping_interval_s": 2.0} for p in plans]
        config = work / "ccstream.toml"
        config.write_text(render_toml({
            "kafka": {"bootstrap_servers": bootstrap, "partitions": 3, **(kafka or {})},
            "topics": topics, "connector": dict(connector),
            "cluster": {**cluster, "group_id": f"{prefix}-connect"},
            "log": {"level": "INFO", "format": "json"}}, streams))
        raw = TopicTail(bootstrap, topics["raw"])
        run = Cluster(sim, bootstrap, config, work / "logs",
                      {p.secret_env: p.secret for p in plans}, topics, raw, plans, grace_s)
        run.log_dir.mkdir()
        try:
            for name in names:
                run.start(name)
            await raw.start()
            yield run
        finally:
            await run.stop_all()
            await raw.stop()


# -- committed cursors -----------------------------------------------------------------------------
def position(cluster: Cluster, plan: StreamPlan, body: dict[str, Any]) -> float:
    """A committed cursor as a number that only grows along the stream (``since`` by time, the
    NICE cursor by log index)."""
    if plan.platform == "genesys":
        since = parse_rfc3339(body["since"])
        assert since is not None, body
        return since
    tag = cluster.sim.streams["nice", plan.client_id].factory.tag
    seq = decode_cursor(str(body["cursor"]), tag)
    assert seq is not None, body
    return float(seq)


def steps_back(cluster: Cluster, records: list[dict[str, Any]]
               ) -> list[tuple[dict[str, Any], tuple[float, str | None]]]:
    """Every committed cursor (``cursor_records``, in order) lower than its stream's previous
    one, with that previous (position, owner)."""
    plans = {p.name: p for p in cluster.plans}
    last: dict[str, tuple[float, str | None]] = {}
    back = []
    for record in records:
        plan = plans[record["stream"]]
        value = position(cluster, plan, record["body"])
        previous = last.get(plan.name)
        if previous is not None and value < previous[0]:
            back.append((record, previous))
        last[plan.name] = (value, record["owner"])
    return back


async def cursor_records(cluster: Cluster) -> list[dict[str, Any]]:
    """Every cursor record, read_committed, in offset order (nothing is compacted yet: the
    active segment never is)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=cluster.bootstrap,
                                isolation_level="read_committed", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out = []
    try:
        tp = TopicPartition(cluster.topics["cursors"], 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        while await consumer.position(tp) < end:
            for batch in (await consumer.getmany(tp, timeout_ms=500)).values():
                for record in batch:
                    doc = orjson.loads(record.value)
                    body = {k: v for k, v in doc.items()
                            if k not in ("platform", "updated_at", "owner")}
                    out.append({"stream": record.key.decode(), "owner": doc.get("owner"),
                                "at": parse_rfc3339(doc["updated_at"]) or 0.0, "body": body})
    finally:
        await consumer.stop()
    return out
