"""Live figures of a running pipeline, for the demo's terminal view, report and timeline.

``TopicTail`` follows a topic ``read_committed`` in the background and keeps exact counts (records,
distinct dedup keys, hashes; per stream, the real platforms' live and backfill records).
``scrape`` reads a ccstream process's Prometheus endpoint.
``Timeline`` keeps one ``Sample`` per tick and draws the PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from ccstream.records import H_SOURCE, H_STREAM, header
from ccstream.topics import partition_count
from devtools.e2e import CleanView, tally


class TopicTail:
    """Reads ``topic`` from the beginning, forever, into a ``CleanView``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.view = CleanView()
        # records per (stream, ccstream-source): the real platforms' live and backfill counts
        self.sources: Counter[tuple[str, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def count(self, stream: str, source: str) -> int:
        return self.sources[stream, source]

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"tail:{self.topic}")

    async def _run(self) -> None:
        count = 0
        while count == 0:  # the topic may not exist yet: ccstream creates it at start-up
            count = await partition_count(self.bootstrap, self.topic)
            if count == 0:
                await asyncio.sleep(0.5)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                    isolation_level="read_committed",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = [TopicPartition(self.topic, p) for p in range(count)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for record in records:
                        tally(self.view, record.headers, record.value)
                        headers = list(record.headers or ())
                        origin = header(headers, H_SOURCE)
                        if origin is not None:
                            stream = header(headers, H_STREAM) or b"?"
                            self.sources[stream.decode(), origin.decode()] += 1
        finally:
            await consumer.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


Metrics = dict[str, float]


async def scrape(session: aiohttp.ClientSession, url: str) -> Metrics:
    """Samples of a Prometheus text endpoint as ``name{labels}`` -> value ({} if unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError):
        return {}
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


def total(metrics: Metrics, name: str, **match: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``match``."""
    result = 0.0
    for key, value in metrics.items():
        metric, _, labels = key.partition("{")
        if metric != name:
            continue
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
        if all(pairs.get(k) == v for k, v in match.items()):
            result += value
    return result


def by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    """``name``'s samples summed per value of ``label``."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        metric, _, labels = key.partition("{")
        if metric != name:
            continue
        pairs = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
        out[pairs.get(label, "")] = out.get(pairs.get(label, ""), 0.0) + value
    return out


@dataclass
class Sample:
    t: float
    emitted: int
    raw: int
    clean: int
    reconnects: int
    token_refreshes: int
    breakers_open: int
    duplicates_removed: int


@dataclass
class FaultMark:
    t: float
    kind: str
    target: str


@dataclass
class Timeline:
    samples: list[Sample] = field(default_factory=list)
    faults: list[FaultMark] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": [s.__dict__ for s in self.samples],
            "faults": [f.__dict__ for f in self.faults],
        }

    def draw(self, path: Path, title: str) -> None:
        """A PNG: events/s emitted, raw and clean; reconnects; faults as marked lines."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ts = [s.t for s in self.samples]
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 2]})
        for attr, label in (("emitted", "emitted by platform"), ("raw", "in raw topic"),
                            ("clean", "in clean topic")):
            top.plot(ts[1:], _rates(ts, [getattr(s, attr) for s in self.samples]), label=label)
        top.set_ylabel("events/s")
        top.legend(loc="upper left")
        top.set_title(title)
        bottom.step(ts, [s.reconnects for s in self.samples], where="post", label="reconnects")
        bottom.step(ts, [s.token_refreshes for s in self.samples], where="post",
                    label="token refreshes")
        bottom.set_ylabel("cumulative")
        bottom.set_xlabel("seconds since start")
        kinds = sorted({f.kind for f in self.faults})
        # faults get their own palette and dashes so they never read as one of the data lines
        colours = plt.get_cmap("Dark2")
        for mark in self.faults:
            colour = colours(kinds.index(mark.kind) % 8)
            for axis in (top, bottom):
                axis.axvline(mark.t, color=colour, alpha=0.6, linewidth=1, linestyle="--")
        for i, kind in enumerate(kinds):
            bottom.plot([], [], color=colours(i % 8), linestyle="--", label=f"fault: {kind}")
        bottom.legend(loc="upper left", fontsize="small", ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _rates(ts: list[float], values: list[int]) -> list[float]:
    out = []
    for i in range(1, len(ts)):
        dt = ts[i] - ts[i - 1]
        out.append((values[i] - values[i - 1]) / dt if dt > 0 else 0.0)
    return out
