"""End-to-end harness: the real broker, the simulator, and ccstream as real processes.

Used by ``ccstream demo`` and by the chaos suite (``tests/test_chaos.py``). The connector and the
dedup worker run as separate OS processes (``python -m pipeline connect|dedup --config FILE``),
exactly as a user runs them, so that ``kill -9`` and SIGTERM are the real thing. The verdict
compares the simulator's ledger (every distinct event it emitted, with a hash of its bytes) with
the clean topic read ``read_committed``: missing and duplicated must both be zero.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from ccstream.config import GuidePlatform as Platform
from ccstream.records import H_DEDUP_KEY, H_PLATFORM, header
from ccstream.topics import partition_count
from devtools.judges import Rec


def payload_hash(value: bytes) -> str:
    """The simulator ledger's hash of an event frame (sha256, 16 hex chars, as ``Event.digest``)."""
    return hashlib.sha256(value).hexdigest()[:16]


@dataclass(frozen=True)
class StreamPlan:
    """One configured stream of the harness: a simulator client on one platform."""

    name: str
    platform: Platform
    client_id: str
    secret: str

    @property
    def secret_env(self) -> str:
        return "CCSTREAM_E2E_SECRET_" + self.name.upper().replace("-", "_").replace(".", "_")


def plan_streams(genesys: int, nice: int, prefix: str = "") -> list[StreamPlan]:
    """``genesys`` + ``nice`` streams, each its own simulator tenant."""
    plans = []
    counts: tuple[tuple[Platform, int], ...] = (("genesys", genesys), ("nice", nice))
    for platform, count in counts:
        for i in range(1, count + 1):
            name = f"{prefix}{platform}-{i}"
            plans.append(StreamPlan(name, platform, name, f"secret-{name}"))
    return plans


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def render_toml(sections: Mapping[str, Mapping[str, Any]],
                streams: Iterable[Mapping[str, Any]]) -> str:
    """A configuration file from plain values (no TOML writer dependency for this)."""
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None)
        lines.append("")
    for stream in streams:
        lines.append("[[streams]]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in stream.items() if v is not None)
        lines.append("")
    return "\n".join(lines)


@dataclass
class Proc:
    """A ccstream process started by the harness; stopped only through its own pid."""

    kind: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]
    starts: int = 1

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class ProcessGroup:
    """Starts ``python -m pipeline <kind> --config FILE`` processes and always reaps them."""

    config_path: Path
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, kind: str, *extra: str, env: Mapping[str, str] | None = None) -> Proc:
        old = self.procs.get(kind)
        if old is not None and old.alive():
            raise RuntimeError(f"{kind} already running as pid {old.pid}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{kind}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "pipeline", kind, "--config", str(self.config_path), *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env, **(env or {})},
        )
        proc = Proc(kind, popen, log_path, log, starts=(old.starts + 1) if old else 1)
        self.procs[kind] = proc
        return proc

    def kill(self, kind: str) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        proc = self.procs[kind]
        proc.signal(signal.SIGKILL)
        proc.wait(10)

    def terminate(self, kind: str, grace: float = 15.0) -> int | None:
        """SIGTERM and wait up to ``grace``; the exit code, or None if it had to be killed."""
        proc = self.procs[kind]
        proc.signal(signal.SIGTERM)
        code = proc.wait(grace)
        if code is None:
            proc.signal(signal.SIGKILL)
            proc.wait(10)
        return code

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.alive():
                proc.signal(signal.SIGTERM)
        for proc in self.procs.values():
            if proc.wait(15) is None:
                proc.signal(signal.SIGKILL)
                proc.wait(10)
            proc.log.close()


@dataclass
class CleanView:
    """What the clean topic holds, read ``read_committed``: count and hashes per dedup key."""

    counts: Counter[str] = field(default_factory=Counter)
    hashes: dict[str, str] = field(default_factory=dict)
    records: int = 0


async def read_topic(bootstrap: str, topic: str, into: CleanView | None = None,
                     idle_ms: int = 1000) -> CleanView:
    """Read ``topic`` from the beginning to its current end (the last stable offset)."""
    view = into or CleanView()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=idle_ms)
            for records in batch.values():
                for record in records:
                    tally(view, record.headers, record.value)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not batch and pending:
                # positions can stop short of the end at transaction markers: re-check the end
                ends = await consumer.end_offsets(list(pending))
    finally:
        await consumer.stop()
    return view


def tally(view: CleanView, headers: Any, value: bytes | None) -> None:
    raw_key = header(list(headers or ()), H_DEDUP_KEY)
    key = raw_key.decode() if raw_key else "?"
    view.records += 1
    view.counts[key] += 1
    view.hashes[key] = payload_hash(value or b"")


@dataclass(frozen=True)
class Verdict:
    """The ledger-vs-clean comparison the demo reports and the chaos suite asserts."""

    emitted: int
    delivered: int
    missing: int
    duplicated: int
    altered: int
    missing_sample: tuple[str, ...] = ()
    duplicated_sample: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.altered == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "emitted": self.emitted, "delivered": self.delivered, "missing": self.missing,
            "duplicated": self.duplicated, "altered": self.altered, "ok": self.ok,
            "missing_sample": list(self.missing_sample),
            "duplicated_sample": list(self.duplicated_sample),
        }


def emitted(ledger: Any) -> dict[str, str]:
    """Every distinct event a simulator emitted, all streams: dedup key -> payload hash.

    ``ledger``: ``Simulator.ledger`` (typed loosely so this module does not import the
    simulator)."""
    merged: dict[str, str] = {}
    for stream in ledger.streams.values():
        merged.update(stream.hashes)
    return merged


def compare(ledger: Mapping[str, str], clean: CleanView) -> Verdict:
    """``ledger``: dedup key -> payload hash of every distinct event emitted."""
    missing = [k for k in ledger if k not in clean.counts]
    duplicated = [k for k, n in clean.counts.items() if n > 1]
    altered = [k for k, h in ledger.items() if k in clean.hashes and clean.hashes[k] != h]
    delivered = sum(1 for k in ledger if k in clean.counts)
    return Verdict(len(ledger), delivered, len(missing), len(duplicated), len(altered),
                   tuple(sorted(missing)[:5]), tuple(sorted(duplicated)[:5]))


def compare_by_platform(ledger: Any, clean: Iterable[Rec]) -> dict[str, Verdict]:
    """``compare`` per seed platform: the simulator's ledger of each platform's streams against
    the clean records of that platform (header ``ccstream-platform``)."""
    emitted_by: dict[str, dict[str, str]] = {}
    for name, stream in ledger.streams.items():
        emitted_by.setdefault(name.split("/", 1)[0], {}).update(stream.hashes)
    views = {platform: CleanView() for platform in emitted_by}
    for record in clean:
        view = views.get(record.header(H_PLATFORM) or "")
        if view is not None:
            tally(view, record.headers, record.value)
    return {p: compare(emitted_by[p], views[p]) for p in sorted(emitted_by)}


def pipeline_config(bootstrap: str, plans: Iterable[StreamPlan], *, urls: Mapping[str, str],
                    token_url: str, prefix: str,
                    overrides: Mapping[str, Mapping[str, Any]] | None = None,
                    per_platform: Mapping[str, Mapping[str, Any]] | None = None,
                    extra_streams: Iterable[Mapping[str, Any]] = ()) -> str:
    """The TOML of a connector + dedup worker pair on the simulator, topics under ``prefix``.

    ``urls``: platform -> stream URL. ``overrides`` replace keys section by section (e.g. scaled
    connector clocks); ``per_platform`` adds keys to the ``[[streams]]`` of a platform;
    ``extra_streams`` are ``[[streams]]`` entries written as given (the real platforms': see
    ``cxone_stream`` and ``gc_stream``).
    """
    sections: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 3},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "connector": {},
        "dedup": {"app_id": f"{prefix}-dedup", "window_s": 3600.0,
                  "expected_events_per_window": 1_000_000},
        "log": {"level": "INFO", "format": "json"},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    streams = [
        {"name": p.name, "platform": p.platform, "url": urls[p.platform], "token_url": token_url,
         "client_id": p.client_id, "client_secret_env": p.secret_env,
         **(per_platform or {}).get(p.platform, {})}
        for p in plans
    ]
    streams.extend(dict(extra) for extra in extra_streams)
    return render_toml({k: v for k, v in sections.items() if v}, streams)


def log_events(path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of a ccstream process whose event name is ``event``."""
    found: list[dict[str, Any]] = []
    if not path.exists():
        return found
    for line in path.read_bytes().splitlines():
        if not line.startswith(b"{"):
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") == event:
            found.append(doc)
    return found


# -- the real platforms (CXone, Genesys Cloud): configuration and what the judges read ------------
def secret_env(name: str, what: str = "SECRET") -> str:
    """The environment variable that carries a real-platform stream's secret."""
    return f"CCSTREAM_E2E_{what}_" + name.upper().replace("-", "_").replace(".", "_")


def cxone_stream(name: str, discovery_url: str, access_key_id: str, client_id: str,
                 **keys: Any) -> dict[str, Any]:
    """A ``[[streams]]`` entry of ``platform = "cxone"``; secrets come from ``secret_env``."""
    return {"name": name, "platform": "cxone", "discovery_url": discovery_url,
            "access_key_id": access_key_id,
            "access_key_secret_env": secret_env(name, "ACCESS_KEY_SECRET"),
            "client_id": client_id, "client_secret_env": secret_env(name), **keys}


def gc_stream(name: str, api_url: str, client_id: str, topics: Iterable[str],
              **keys: Any) -> dict[str, Any]:
    """A ``[[streams]]`` entry of ``platform = "genesys-cloud"``; the secret from ``secret_env``."""
    return {"name": name, "platform": "genesys-cloud", "api_url": api_url,
            "client_id": client_id, "client_secret_env": secret_env(name),
            "topics": list(topics), **keys}


async def read_records(bootstrap: str, topic: str, idle_ms: int = 1000) -> list[Rec]:
    """Every record of ``topic`` (``read_committed``) up to its current end, as the judges read
    them: key, value, headers."""
    out: list[Rec] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        count = await partition_count(bootstrap, topic)
        partitions = [TopicPartition(topic, p) for p in range(count)]
        if not partitions:
            return out
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        pending = {tp for tp in partitions if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=idle_ms)
            for records in batch.values():
                out.extend(Rec.of(r.key, r.value, r.headers) for r in records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
            if not batch and pending:
                ends = await consumer.end_offsets(list(pending))
    finally:
        await consumer.stop()
    return out


async def read_cursor(bootstrap: str, topic: str, stream: str) -> dict[str, Any] | None:
    """The last committed cursor of ``stream`` in the cursor topic (its JSON), or None."""
    found: dict[str, Any] | None = None
    for record in await read_records(bootstrap, topic):
        if record.key == stream.encode() and record.value:
            doc = orjson.loads(record.value)
            if isinstance(doc, dict):
                found = doc
    return found


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON log line of a ccstream process (all its lives: the log is appended)."""
    found: list[dict[str, Any]] = []
    if not path.exists():
        return found
    for line in path.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(doc, dict):
                found.append(doc)
    return found
