"""The Faust dedup worker: raw -> clean, each dedup key once, in Kafka transactions.

Exactly once across crashes comes from faust ``processing_guarantee="exactly_once"``: one
transactional producer per assigned raw partition (transactional id ``{app}-{group}-{p}``,
faust/transport/consumer.py ``TransactionManager``), whose transaction also commits that
partition's input offsets. For one raw partition ``p`` the agent writes, through *that*
partition's producer: the clean records, the DLQ records and the changelog ops of the filter.
So a batch's filter update, its clean records and its offset commit are one Kafka transaction:
after a crash either all of them are visible (``read_committed``) or none, and the records are
read and judged again against a filter rebuilt without them. The ops include the judged raw
position, so records faust skips or redelivers are recognised (``DedupAgent.handle``).

Why not ``clean_topic.send()``: faust routes a send by the *destination* topic's partition and
topic group, and the clean topic is not subscribed, so it has no group (KeyError); naming the
input partition's transactional id is what ties the writes to the input offset.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT

from ccstream import metrics
from ccstream.config import Config
from ccstream.logs import get_logger
from ccstream.records import (
    H_DLQ_ENCODING,
    H_DLQ_REASON,
    H_STREAM,
    Headers,
    dlq_value,
    header,
)
from ccstream.topics import committed_offsets, max_record_bytes
from pipeline import faust_compat
from pipeline.bloom import policy_for
from pipeline.dedup import keys, members
from pipeline.dedup.readback import read_range
from pipeline.dedup.state import PartitionDedup, Position, Verdict
from pipeline.dedup.table import DedupTable

log = get_logger("ccstream.dedup")
# exit status when the worker stops itself rather than commit an unsafe state (see _die)
EXIT_NO_COMMIT = 70
# how long reading back records faust skipped may take before the worker stops (see _skipped)
GAP_READ_TIMEOUT_S = 60.0
# a member learns that its group rebalances (a worker joined or left) from the answer to its
# next heartbeat; at session_timeout_s / 4 (2.5 s) that wait was most of a rebalance's stall
HEARTBEAT_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Topology:
    """The topics one worker uses and how many partitions they have (read at start)."""

    raw: str
    clean: str
    dlq: str
    changelog: str
    raw_partitions: int
    clean_partitions: int


def changelog_retention_s(config: Config) -> float:
    """Ops must outlive the oldest generation still in use: ``G`` rotation periods, plus the
    margin for a worker that is down (its ops must still be there when it recovers)."""
    d = config.dedup
    return d.generations * d.window_s / (d.generations - 1) + d.changelog_retention_margin_s


def build_app(config: Config, topo: Topology,
              agent_type: type[DedupAgent] | None = None) -> tuple[faust.App, DedupTable]:
    """The faust app with its table and agent; not started (``agent_type``: benchmarks)."""
    d = config.dedup
    datadir = d.data_dir or tempfile.mkdtemp(prefix="ccstream-dedup-")
    app = faust.App(
        d.app_id,
        broker=[f"kafka://{s.strip()}" for s in config.kafka.bootstrap_servers.split(",")],
        store="memory://",
        processing_guarantee="exactly_once",
        # faust's internal topics must be co-partitioned with the raw topic, whatever its size
        topic_partitions=topo.raw_partitions,
        topic_replication_factor=config.kafka.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=d.workers_standby_replicas,
        broker_commit_interval=d.commit_interval_s,
        broker_session_timeout=d.session_timeout_s,
        broker_heartbeat_interval=min(HEARTBEAT_INTERVAL_S, d.session_timeout_s / 4),
        broker_rebalance_timeout=max(2 * d.session_timeout_s, 5.0),
        consumer_group_instance_id=d.instance_id,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,  # several workers share a host: no port 6066 clash
        autodiscover=False,
        datadir=str(Path(datadir)),
        producer_linger=config.kafka.linger_ms / 1000.0,
        # faust's default (1,000,000 B) is below the largest raw record the connector writes
        # (a max_frame_bytes frame plus headers): such a record could never reach clean, and
        # the worker would stop on it again after every restart
        producer_max_request_size=max_record_bytes(config.connector.max_frame_bytes),
        # without faust's fixed waits at start, recovery and rebalance (faust_compat.prompt)
        TableManager=faust_compat.TableManager,
    )
    faust_compat.prompt(app)
    policy = policy_for(d.window_s, d.generations, d.expected_events_per_window,
                        d.false_positive_rate, d.memory_factor)
    table = DedupTable(
        app, source_topic=topo.raw, partitions=topo.raw_partitions,
        bootstrap=config.kafka.bootstrap_servers,
        factory=lambda: PartitionDedup(policy, strict=d.strict),
        extra_topic_configs={"retention.ms": str(int(changelog_retention_s(config) * 1000))},
    )
    app.tables.add(table)
    if d.instance_id is None:  # a static member takes its own place already (members.py)
        folder = members.directory(config)

        async def _record_member(sender: Any, *_: Any, **__: Any) -> None:
            member = faust_compat.member_id(sender)
            if member:
                members.record(folder, member)

        handler: Any = _record_member  # faust's Signal types a handler narrower than it calls
        app.on_partitions_assigned.connect(handler)
    raw_topic = app.topic(topo.raw, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    agent = (agent_type or DedupAgent)(app, table, topo, config)
    app.agent(raw_topic, name="ccstream-dedup")(agent.run)

    async def gauges() -> None:
        refresh_gauges(table)
        await refresh_lag(app, topo.raw)

    app.timer(interval=5.0)(gauges)

    return app, table


class DedupAgent:
    """The agent body: batches of raw events in, transactional writes out."""

    def __init__(self, app: faust.App, table: DedupTable, topo: Topology,
                 config: Config) -> None:
        self.app = app
        self.config = config
        self.table = table
        self.topo = topo
        # partitions whose redelivered records were already logged once (see _redelivered)
        self._redelivery_logged: set[int] = set()
        # the group's committed raw offsets, read once per consumer generation (_start_of)
        self._starts: dict[int, int] = {}
        self._starts_generation: int | None = None
        # the batch's verdicts, counted per record and published per partition per batch
        # (a Prometheus label lookup and increment per record was 3 % of the worker's CPU)
        self._tally = Tally()
        # the changelog partitions holding any offset, per consumer generation (_check_recovered)
        self._holding: set[int] | None = None
        self._holding_generation: int | None = None

    async def run(self, stream: Any) -> None:
        # Batches: faust acks a batch's events after this body is done with it, so the batch's
        # writes are in the transaction before any of its offsets can commit. Events faust
        # acks without delivering them (around a rebalance) leave a hole that the judged
        # position catches (``_skipped``).
        d = self.config.dedup
        async for events in stream.take_events(d.batch_max_events, within=d.batch_within_s):
            await self.handle(events)

    async def handle(self, events: Sequence[EventT[Any]]) -> None:
        by_partition: dict[int, list[Any]] = {}
        for event in events:
            by_partition.setdefault(int(event.message.partition), []).append(event.message)
        for partition, messages in by_partition.items():
            state = self.table.store.partition_state(partition)
            outs: list[Out] = []
            for message in messages:
                offset = int(message.offset)
                if state.next_offset is None:  # never judged here: where the group stands
                    await self._check_recovered(partition)
                    state.start_at(await self._start_of(partition))
                position = state.position(offset)
                if position is Position.JUDGED:
                    self._redelivered(partition, state, offset)
                    continue
                if position is Position.GAP:
                    start = state.next_offset
                    assert start is not None
                    for missed in await self._skipped(partition, start, offset):
                        outs += self._judged(partition, state, missed)
                outs += self._judged(partition, state, message)
            outs += [Out(self.topo.changelog, op, value, partition, None, None)
                     for op, value in state.drain()]
            self._tally.publish(str(partition))
            await self._write(partition, outs)

    def _judged(self, partition: int, state: PartitionDedup, message: Any) -> list[Out]:
        out = self._judge(partition, message)
        state.judged(int(message.offset))
        return [] if out is None else [out]

    def _redelivered(self, partition: int, state: PartitionDedup, offset: int) -> None:
        """A record below the judged position: judged in a committed transaction whose input
        offsets were not committed (a crash between the two). Skipped, whatever the filter
        would say."""
        metrics.DEDUP_REDELIVERED.labels(str(partition)).inc()
        if partition not in self._redelivery_logged:
            self._redelivery_logged.add(partition)
            log.info("dedup.redelivered_skipped", partition=partition, offset=offset,
                     next_offset=state.next_offset)

    async def _skipped(self, partition: int, start: int, end: int) -> list[Fetched]:
        """The raw records in ``[start, end)`` that never reached this body, read back.

        The input position is part of the filter's state: each judged record's ``O`` op goes
        into the transaction that carries its clean record and filter ops, so
        ``state.next_offset`` is exactly where the committed judgement stands, on this worker
        or on whichever recovers the partition from the changelog. A record delivered past it
        means faust skipped the ones in between: it drops records fetched across a rebalance
        (stale generation id, faust/streams.py) without acking them, its fetcher drops records
        below its read offset, and when it saw a jump it commits past it
        (faust/transport/consumer.py ``_add_gap``/``_new_offset``). The two-worker failover
        test lost the first records of the partitions a worker kept that way, 2 runs in 3.

        So they are read here, with a consumer of our own (``read_committed``, like faust's),
        and judged before the delivered record, in the same transaction. Offsets that hold no
        record (a transactional producer's markers, retention) simply yield nothing. Seeking
        faust's consumer back instead raced with its fetcher, which drops records below the
        read offset of records it had already fetched.
        """
        tp = TopicPartition(self.topo.raw, partition)
        found: list[Fetched] = []
        try:
            found = [Fetched.of(r) for r in await read_range(
                self.config.kafka.bootstrap_servers, tp, start, end, GAP_READ_TIMEOUT_S)]
        except Exception as err:  # noqa: BLE001 - unread records must not be committed past
            _die("dedup.skipped_unreadable", partition=partition, start=start, end=end,
                 error=repr(err))
        # Faust never delivered (so never acks) these offsets and will not commit past an
        # un-acked hole; marking them as a "gap" lets its offset commits go on once the record
        # after them is acked (their writes are in the transaction before that ack).
        await faust_compat.add_gap(self.app, TP(self.topo.raw, partition), start, end - 1)
        metrics.DEDUP_SKIPPED_READ.labels(str(partition)).inc(len(found))
        log.warning("dedup.skipped_read_back", partition=partition, start=start, end=end,
                    records=len(found))
        return found

    async def _check_recovered(self, partition: int) -> None:
        """Stop (exit 70: the restarted worker recovers again) if the partition's changelog
        holds committed ops while its state has no position: every batch of ops carries the
        position, so the recovery missed them. Seen in about 1 test run in 10 on a changelog
        a test had filled just before the worker started: faust's recovery read nothing
        (``dedup.recovered`` with 0 ops) and the filter and position would have started
        empty; the cause inside faust is not found."""
        generation = self.app.consumer_generation_id
        if self._holding_generation != generation:
            self._holding = await self._changelogs_holding_records()
            self._holding_generation = generation
        if self._holding is not None and partition not in self._holding:
            return  # an empty changelog partition (a first start): nothing to have missed
        tp = TopicPartition(self.topo.changelog, partition)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.config.kafka.bootstrap_servers,
                                    enable_auto_commit=False, isolation_level="read_committed",
                                    auto_offset_reset="earliest")
        try:
            await consumer.start()
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            found = (await consumer.getmany(tp, timeout_ms=2000, max_records=1)).get(tp)
        except Exception as err:  # noqa: BLE001 - unknown: go on as without this check
            log.warning("dedup.recovery_check_failed", partition=partition, error=repr(err))
            return
        finally:
            await consumer.stop()
        if found:
            _die("dedup.recovery_incomplete", partition=partition, changelog=tp.topic)

    async def _changelogs_holding_records(self) -> set[int] | None:
        """The changelog partitions that hold any offset, read once per consumer generation
        for all of them (None: unknown, check each). Reading each empty partition on its own,
        waiting out a fetch timeout, cost 3 s per partition one after the other before the
        first clean record of every fresh start (bench/bench_stall.py)."""
        tps = [TopicPartition(self.topo.changelog, p) for p in range(self.topo.raw_partitions)]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.config.kafka.bootstrap_servers,
                                    enable_auto_commit=False)
        try:
            await consumer.start()
            first = await consumer.beginning_offsets(tps)
            end = await consumer.end_offsets(tps)
            return {tp.partition for tp in tps if end[tp] > first[tp]}
        except Exception as err:  # noqa: BLE001 - unknown: each partition is read instead
            log.warning("dedup.recovery_check_failed", partition=None, error=repr(err))
            return None
        finally:
            await consumer.stop()

    async def _start_of(self, partition: int) -> int:
        """Where a partition without a judged position starts: the group's committed offset,
        or the log start (faust's ``auto_offset_reset`` is ``earliest``).

        Read once per consumer generation, for every raw partition in one request: before
        this body has seen a record of a partition, faust has acked nothing of it, so it
        cannot have committed past its start yet."""
        generation = self.app.consumer_generation_id
        try:
            if self._starts_generation != generation:
                tps = [TP(self.topo.raw, p) for p in range(self.topo.raw_partitions)]
                committed = await committed_offsets(
                    self.config.kafka.bootstrap_servers, self.app.conf.id, self.topo.raw,
                    self.topo.raw_partitions)
                # the log start of the others, all in one request too (one each, in turn,
                # cost ~1.5 s per partition before the first clean record of a fresh start)
                earliest = await self.app.consumer.earliest_offsets(
                    *(tp for tp in tps if tp.partition not in committed))
                self._starts = {**{tp.partition: int(o) for tp, o in earliest.items()},
                                **committed}
                self._starts_generation = generation
            return self._starts[partition]
        except Exception as err:  # noqa: BLE001 - unknown start: re-read rather than guess
            _die("dedup.start_offset_unknown", partition=partition, error=repr(err))

    def _judge(self, partition: int, message: Any) -> Out | None:
        """What one raw record becomes: a clean record, a DLQ record, or nothing (duplicate)."""
        tally = self._tally
        tally.judged += 1
        # aiokafka's header values are bytes already (and Fetched's are made so)
        headers: Headers = list(message.headers or ())
        key = keys.key_of(headers, message.value)
        if isinstance(key, keys.Unkeyable):
            metrics.DEDUP_DLQ.labels(key.reason).inc()
            log.warning("dedup.dlq", partition=partition, offset=message.offset,
                        reason=key.reason)
            # as the connector writes DLQ records (contract: base64 if not text), and cut so
            # that it fits in the DLQ topic whatever the raw record's size
            value, encoding, reason = dlq_value(bytes(message.value or b""), key.reason, False)
            return Out(self.topo.dlq, header(headers, H_STREAM) or b"", value, None,
                       message.timestamp, [*headers, (H_DLQ_REASON, reason.encode()),
                                           (H_DLQ_ENCODING, encoding.encode())])
        state = self.table.store.partition_state(partition)
        decision = state.decide(key, float(message.timestamp or 0.0))
        if decision.rotated_to is not None:
            _rotated(partition, state, decision.rotated_to)
        if decision.verdict is Verdict.DUPLICATE:
            tally.duplicates += 1
            log.debug("dedup.duplicate", partition=partition, offset=message.offset,
                      dedup_key=key.decode(errors="replace"))
            return None
        if decision.false_positive:
            metrics.DEDUP_STRICT_FP.labels(str(partition)).inc()
        tally.forwarded += 1
        return Out(self.topo.clean, message.key, message.value,
                   partition % self.topo.clean_partitions, message.timestamp, headers)

    async def _write(self, partition: int, outs: list[Out]) -> None:
        """Append a partition's whole batch to that partition's transaction, atomically.

        Faust commits a transaction (offsets + commit + begin next) under a per-transaction
        lock, from another task. Holding that lock while appending means no commit can fall
        between the batch's clean records and its changelog ops: they land in one transaction,
        and its input offsets (acked only after this returns) in that or a later one. A commit
        in between would make clean records visible whose ops and offsets are not: a crash
        there duplicates them. (faust's ``Producer.send(transactional_id=...)`` takes the lock
        per record, which is why the driver's producer is used directly.)
        """
        if not outs:
            return
        found = faust_compat.transaction(self.app, self.topo.raw, partition)
        if found is None:
            _die("dedup.no_transaction", partition=partition,
                 transactional_id=faust_compat.transactional_id(self.app, self.topo.raw,
                                                               partition))
        producer, lock = found
        try:
            async with lock:
                futures = await _append(producer, outs)
        except Exception as err:  # noqa: BLE001  # any failure: see _die
            _die("dedup.send_failed", partition=partition, error=repr(err))
        for fut in futures:
            fut.add_done_callback(_log_send_failure)


async def _append(producer: Any, outs: list[Out]) -> list[asyncio.Future[Any]]:
    """``outs`` into ``producer``'s open transaction: one record batch per destination
    partition, in order within each, instead of one ``send()`` per record (which looks the
    topic's metadata up and makes a future per record: 10-15 % of the worker's time). A full
    batch is submitted and the next one begun; a record without a partition (DLQ: the
    partitioner chooses) goes through ``send()``. Both join the transaction the same way
    (aiokafka adds a batch's partition to it before the batch is sent)."""
    builders: dict[tuple[str, int], Any] = {}
    futures: list[asyncio.Future[Any]] = []
    for o in outs:
        stamp = None if o.timestamp is None else round(o.timestamp * 1000)
        if o.partition is None:
            futures.append(await producer.send(o.topic, o.value, key=o.key, headers=o.headers,
                                               timestamp_ms=stamp))
            continue
        target = (o.topic, o.partition)
        builder = builders.get(target)
        if builder is None:
            builder = builders[target] = producer.create_batch()
        if builder.append(key=o.key, value=o.value, timestamp=stamp,
                          headers=o.headers or []) is None:  # full: submit it, begin the next
            futures.append(await producer.send_batch(builder, o.topic, partition=o.partition))
            builder = builders[target] = producer.create_batch()
            # the first record of a batch always fits (aiokafka's rule, as Kafka's)
            builder.append(key=o.key, value=o.value, timestamp=stamp, headers=o.headers or [])
    for (topic, partition), builder in builders.items():
        futures.append(await producer.send_batch(builder, topic, partition=partition))
    return futures


@dataclass(frozen=True)
class Fetched:
    """A raw record read back by the agent itself, shaped like faust's message (seconds)."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: float
    offset: int

    @classmethod
    def of(cls, record: Any) -> Fetched:
        return cls(record.key, record.value, [(k, bytes(v)) for k, v in record.headers or ()],
                   record.timestamp / 1000.0, int(record.offset))


class Out(NamedTuple):
    """One record to append to the transaction (a tuple: one is made per forwarded record)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    timestamp: float | None
    headers: Headers | None


@dataclass
class Tally:
    """Verdicts counted since the last ``publish``."""

    judged: int = 0
    forwarded: int = 0
    duplicates: int = 0

    def publish(self, label: str) -> None:
        """Add the counts to the partition's metrics and start again from zero."""
        for metric, count in ((metrics.DEDUP_IN, self.judged),
                              (metrics.DEDUP_FORWARDED, self.forwarded),
                              (metrics.DEDUP_DUPLICATES, self.duplicates)):
            if count:
                metric.labels(label).inc(count)
        self.judged = self.forwarded = self.duplicates = 0


def _die(event: str, **fields: Any) -> NoReturn:
    """Stop the process at once, committing nothing more.

    An event is acked when the agent body moves on *or fails* (faust's stream acks it either
    way), so raising here would let faust commit offsets of events whose output was never
    appended: lost events. Exiting keeps the transaction open; Kafka aborts it when the
    partition's next owner fences it, and that owner re-reads the events. The supervisor
    (systemd, Kubernetes) restarts the worker.
    """
    log.error(event, **fields)
    logging.shutdown()
    os._exit(EXIT_NO_COMMIT)


def _rotated(partition: int, state: PartitionDedup, generation: int) -> None:
    label = str(partition)
    metrics.DEDUP_ROTATIONS.labels(label).inc()
    metrics.DEDUP_GENERATION.labels(label).set(generation)
    metrics.FILTER_FILL.labels(label).set(state.bloom.fill_ratio())
    metrics.FILTER_FP_RATE.labels(label).set(state.bloom.estimated_fp())
    log.info("dedup.generation_rotated", partition=partition, generation=generation,
             generations=list(state.bloom.filters),
             stream_time=None if math.isinf(state.stream_time) else state.stream_time)


def _log_send_failure(fut: asyncio.Future[Any]) -> None:
    # the transaction then fails to commit and faust crashes the worker: nothing is committed
    if not fut.cancelled() and fut.exception() is not None:
        log.error("dedup.send_failed", error=repr(fut.exception()))


async def refresh_lag(app: faust.App, raw: str) -> None:
    """``ccstream_consumer_lag``: records of each assigned raw partition not yet read."""
    consumer = app.consumer
    try:
        for tp in consumer.assignment():
            if tp.topic != raw:
                continue
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - position))
    except Exception as err:  # noqa: BLE001 - a gauge must never take the worker down
        log.debug("dedup.lag_unavailable", error=repr(err))


def refresh_gauges(table: DedupTable) -> None:
    """Per-partition fill ratio and estimated false-positive rate."""
    for partition, state in list(table.store.partitions.items()):
        metrics.FILTER_FILL.labels(str(partition)).set(state.bloom.fill_ratio())
        metrics.FILTER_FP_RATE.labels(str(partition)).set(state.bloom.estimated_fp())
