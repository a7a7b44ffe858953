"""The dedup state as a Faust table: one ``PartitionDedup`` per partition, changelogged as ops.

Modelled on faust's ``ChangeloggedObjectManager`` (faust/tables/objects.py): a custom store whose
per-partition object is the filter and whose ``apply_changelog_batch`` replays ops. Faust does
the rest of what a table is for: it subscribes the changelog, recovers each newly assigned
partition from it with ``read_committed`` before the agent sees that partition's records, keeps
standby replicas, and moves partitions on rebalance.

Why the agent, not this store, *writes* the ops: faust's own changelog path (``send_soon`` into
the producer buffer) is not flushed before the transaction commits (faust/transport/consumer.py
``_commit_offsets``), so a crash could commit an input offset whose ops are still buffered. The
agent appends the ops to the partition's transactional producer itself, before the offsets are
acked, which puts them in the same Kafka transaction as the clean records and the offsets.

The changelog is *not* compacted (ops are not key/value updates) but deleted by age: its
retention covers the oldest generation still in use, plus a margin for worker downtime.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.base import Store
from faust.types import TP, EventT

from ccstream import metrics
from ccstream.logs import get_logger
from pipeline import faust_compat
from pipeline.dedup.state import PartitionDedup

log = get_logger("ccstream.dedup")

TABLE_NAME = "bloom"
# a record this close to the high watermark may be the last before markers: a committed
# transaction ends in one commit marker, a worker killed mid-transaction leaves its aborted
# ops and an abort marker (one op per batch, so up to a few hundred); a check reads the rest
# once, and again only from the last record it found there
MARKER_SLACK = 1000
MARKER_READ_TIMEOUT_S = 5.0


class DedupStore(Store[bytes, bytes]):
    """Partition number -> ``PartitionDedup``; nothing is stored per key."""

    def __init__(self, table: DedupTable, factory: Callable[[], PartitionDedup]) -> None:
        super().__init__("memory://", table.app, table)
        self.dedup_table = table
        self.factory = factory
        self.partitions: dict[int, PartitionDedup] = {}
        self.recovered_ops: dict[int, int] = {}
        self._recovery_started: dict[int, float] = {}

    def partition_state(self, partition: int) -> PartitionDedup:
        found = self.partitions.get(partition)
        if found is None:
            found = self.partitions[partition] = self.factory()
        return found

    # -- recovery: faust feeds the changelog here ---------------------------------------------
    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Callable[[Any], Any],
                              to_value: Callable[[Any], Any]) -> None:
        for event in batch:
            message = event.message
            partition = int(message.partition)
            state = self.partition_state(partition)
            state.apply(bytes(message.key or b""), bytes(message.value or b""))
            self.recovered_ops[partition] = self.recovered_ops.get(partition, 0) + 1
            metrics.DEDUP_RECOVERY_OPS.labels(str(partition)).inc()

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        raw = self.dedup_table.source_topic
        # State is kept across a rebalance, never dropped here: a partition revoked from this
        # worker was committed first (faust waits for in-flight events and commits before
        # revoking, ``stream_wait_empty``), so its state equals its committed changelog; a
        # standby promoted to active holds committed ops only (read_committed). Faust then
        # replays the changelog from where it stands, and ops are idempotent. Partitions that
        # end up neither active nor standby are dropped when recovery completes.
        gained = sorted(tp.partition for tp in newly_assigned if tp.topic == raw)
        lost = sorted(tp.partition for tp in revoked if tp.topic == raw)
        now = time.monotonic()
        for partition in gained:
            self._recovery_started[partition] = now
            metrics.DEDUP_RECOVERING.labels(str(partition)).set(1)
        active = sorted(tp.partition for tp in assigned if tp.topic == raw)
        if lost:
            log.info("dedup.partitions_revoked", partitions=lost, generation=generation_id,
                     active=active)
        if gained or not lost:
            # "partitions": taken over now (recovered from the changelog before use);
            # "active": everything this worker owns after the rebalance
            log.info("dedup.partitions_assigned", partitions=gained, generation=generation_id,
                     active=active)

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        changelog = self.dedup_table.changelog_topic_name
        keep = {tp.partition for tp in active_tps | standby_tps if tp.topic == changelog}
        for partition in [p for p in self.partitions if p not in keep]:
            del self.partitions[partition]
        for partition, started in sorted(self._recovery_started.items()):
            state = self.partitions.get(partition)
            log.info("dedup.recovered", partition=partition,
                     ops=self.recovered_ops.get(partition, 0),
                     sha256=None if state is None else state_digest(state),
                     generations=[] if state is None else list(state.bloom.filters),
                     seconds=round(time.monotonic() - started, 3))
            metrics.DEDUP_RECOVERING.labels(str(partition)).set(0)
        self._recovery_started.clear()

    # -- the StoreT surface faust calls; nothing is persisted locally --------------------------
    def persisted_offset(self, tp: TP) -> int | None:
        return None

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        return None

    async def need_active_standby_for(self, tp: TP) -> bool:
        return True

    def reset_state(self) -> None:
        self.partitions.clear()

    async def backup_partition(self, tp: TP | int, flush: bool = True, purge: bool = False,
                               keep: int = 1) -> None:
        return None

    def restore_backup(self, tp: TP | int, latest: bool = True, backup_id: int = 0) -> None:
        return None

    def __getitem__(self, key: Any) -> Any:
        raise KeyError(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        raise NotImplementedError("the dedup table is written through its ops")

    def __delitem__(self, key: Any) -> None:
        raise NotImplementedError("the dedup table is written through its ops")

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0


class DedupTable(faust_compat.OpTable):
    """A changelogged table whose per-partition value is a ``PartitionDedup``."""

    def __init__(self, app: faust.App, *, source_topic: str,
                 factory: Callable[[], PartitionDedup], bootstrap: str = "",
                 **kwargs: Any) -> None:
        self.source_topic = source_topic
        self._factory = factory
        self._bootstrap = bootstrap  # for the markers check (empty: no check)
        # (changelog partition, highwater) -> its last committed record's offset (None: none
        # within MARKER_SLACK of the highwater)
        self._last: dict[tuple[TP, int], int | None] = {}
        super().__init__(app, name=TABLE_NAME, key_type=bytes, value_type=bytes, **kwargs)

    async def on_stop(self) -> None:
        # a digest of every partition's filter at a clean stop: what a restart must rebuild
        for partition, state in sorted(self.store.partitions.items()):
            log.info("dedup.filter_digest", partition=partition, sha256=state_digest(state),
                     generations=list(state.bloom.filters))
        await super().on_stop()

    async def on_changelog_event(self, event: EventT[Any]) -> None:
        """End a partition's recovery at its last record when only markers follow it.

        The filter's changelog is written in the agent's transactions, so it always ends in a
        commit marker, an offset no ``read_committed`` reader ever receives. Faust's recovery
        waits for the high watermark and, when the last record is below it, concludes that the
        rest is markers only after two idle 5 s polls: a 10-15 s stall at every start, restart
        and rebalance (the clean topic stops flowing meanwhile). So when a delivered record is
        within ``MARKER_SLACK`` of the high watermark, the last committed record of that
        partition's tail is looked up (``_last_committed``: every partition being recovered,
        read once together); the record that is the last one ends the partition's recovery at
        once. What follows it (commit markers, a killed worker's aborted ops and their abort
        marker) holds nothing for a ``read_committed`` reader.
        """
        await super().on_changelog_event(event)
        message = event.message
        remaining = faust_compat.recovery_remaining(self.app, message.tp, message.offset)
        if not self._bootstrap or remaining is None or not 0 < remaining <= MARKER_SLACK:
            return
        last = await self._last_committed(message.tp, message.offset + remaining)
        if last is None or message.offset < last:
            return  # unknown (faust's own wait ends it), or faust delivers the rest first
        faust_compat.recovery_reached_end(self.app, message.tp)
        log.info("dedup.recovery_markers_skipped", partition=message.tp.partition,
                 offsets=remaining)

    async def _last_committed(self, tp: TP, highwater: int) -> int | None:
        """The offset of the last committed record of ``tp`` up to ``highwater`` (faust's: the
        last offset before the stable end), if it is within ``MARKER_SLACK`` of it.

        Read for every changelog partition being recovered at once, with one consumer, and
        kept: what is below the stable end never changes. (One partition at a time, each with a
        consumer of its own waiting out a fetch that found only markers, cost 0.5 s per
        partition in turn: 3 s of every recovery of 6 partitions.)"""
        key = (tp, highwater)
        if key not in self._last:
            wanted = {t: h for t, h in faust_compat.recovery_highwaters(self.app).items()
                      if t.topic == tp.topic and h >= 0 and (t, h) not in self._last}
            wanted[tp] = highwater
            try:
                found = await read_tails(self._bootstrap, wanted, MARKER_SLACK,
                                         MARKER_READ_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - unknown: faust's own wait still ends it
                log.debug("dedup.markers_check_failed", partition=tp.partition, error=repr(err))
                return None
            self._last = {k: v for k, v in self._last.items() if k[0] not in found}
            self._last.update({(t, wanted[t]): last for t, last in found.items()})
        return self._last.get(key)

    def make_store(self) -> DedupStore:
        return DedupStore(self, self._factory)

    @property
    def store(self) -> DedupStore:
        data = self.data
        assert isinstance(data, DedupStore)
        return data


async def read_tails(bootstrap: str, highwaters: dict[TP, int], depth: int,
                     timeout_s: float) -> dict[TP, int | None]:
    """Per partition, the offset of its last committed record among the ``depth + 1`` offsets
    up to its ``highwater`` (None: none there), read ``read_committed`` for all partitions at
    once. A partition whose read did not reach its highwater within ``timeout_s`` is left out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest",
                                # a fetch that found only markers returns at once
                                fetch_max_wait_ms=10)
    tps = {TopicPartition(tp.topic, tp.partition): tp for tp in highwaters}
    last: dict[TP, int | None] = dict.fromkeys(highwaters)
    done: set[TP] = set()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        await consumer.start()
        consumer.assign(list(tps))
        for ktp, tp in tps.items():
            consumer.seek(ktp, max(0, highwaters[tp] - depth))
        while len(done) < len(tps) and loop.time() < deadline:
            batches = await consumer.getmany(*(k for k, t in tps.items() if t not in done),
                                             timeout_ms=20)
            for ktp, records in batches.items():
                tp = tps[ktp]
                inside = [int(r.offset) for r in records if r.offset <= highwaters[tp]]
                if inside:
                    last[tp] = max(inside)
            for ktp, tp in tps.items():
                if tp not in done and await consumer.position(ktp) > highwaters[tp]:
                    done.add(tp)
    finally:
        await consumer.stop()
    return {tp: last[tp] for tp in done}


def state_digest(state: PartitionDedup) -> str:
    """SHA-256 over the judged position, every generation's id and bit array (and strict
    mode's exact keys)."""
    h = hashlib.sha256()
    h.update(str(state.next_offset).encode())
    for generation, bits in state.bloom.state():
        h.update(generation.to_bytes(8, "little", signed=True))
        h.update(bits)
    if state.exact is not None:
        for generation, bucket in state.exact.keys.items():
            h.update(generation.to_bytes(8, "little", signed=True))
            h.update(b"\n".join(sorted(bucket)))
    return h.hexdigest()


def changelog_topic_name(app_id: str) -> str:
    """Faust's name for the table's changelog topic (``{app id}-{table}-changelog``)."""
    return f"{app_id}-{TABLE_NAME}-changelog"
