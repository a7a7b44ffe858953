"""The one module that touches faust's and mode's private names, checked at start-up.

The dedup worker needs a few things faust does not publish:

* the per-partition transactional producers and their locks of faust's aiokafka driver
  (``Producer._transaction_producers``, ``Producer._trn_locks``) and the transactional id they are
  registered under (``"{app id}-{group}-{partition}"``, ``TransactionManager.send``), so that a
  batch of clean records and filter ops is appended to one transaction atomically;
* ``Consumer._add_gap``, so that faust's offset commits pass records the agent read back itself;
* the recovery's progress per changelog partition (``Recovery.active_offsets`` and
  ``active_highwaters``), so that a changelog ending in transaction markers is recovered at
  once instead of after faust's two idle 5 s polls;
* a table's changelog settings and store factory (``Collection._changelog_compacting``,
  ``_changelog_deleting``, ``_new_store``), so that the filter's changelog is op-coded and
  deleted by age, and its store is our ``DedupStore``;
* mode's signal hooks (``Worker._on_sigterm``, ``_on_sigint``, ``_schedule_shutdown``) for
  ``ccstream run``'s own shutdown order, faust's start-up ``spinner`` (turned off: it writes a
  terminal escape in front of JSON log lines), and mode's last second of a stopped worker's
  event loop (``Worker._sentinel_task``, cut to a tick);
* the fixed waits of faust's start, recovery and rebalance, cut (``prompt(app)``, measured with
  ``bench/bench_stall.py``): the table manager's 1 s sleep before tables register
  (``TableManager.on_start``, ``_update_channels``); the worker consumer's 1.5 s fetch long-poll
  (``AIOKafkaConsumerThread._create_worker_consumer``, aiokafka's ``_fetch_max_wait_ms``), which
  every other request on that broker connection queues behind; the fetch loop's 1 s waits
  (``Consumer._wait_next_records``, ``_get_active_partitions``, ``getmany(timeout=1.0)``), the
  time a partition resumed after recovery waits to be read; and the transactional producers
  started and stopped one partition after another
  (``TransactionManager._start_transactions``, ``_stop_transactions``,
  ``Consumer._new_consumer_thread``); and the producer of a partition revoked into a standby,
  which faust kept (fenced) and used again when the partition came back
  (``TransactionManager._tps_to_transactional_ids``); and the recovery's highwaters, which in
  exactly-once faust takes from the last fetch response, unknown (-1) right after a rebalance
  (``AIOKafkaConsumerThread._highwaters``, ``_ensure_consumer``);
* the steady state's per-record and per-commit costs (measured with ``bench/bench_latency.py``
  and ``bench/bench_dedup_agent.py``): the fetch loop's four tasks per record
  (``Consumer._drain_messages`` calls ``wait_first``, mode's ``Service._stopped``, ``_crashed``;
  ``PromptDelivery``), and the partitions' transactions committed one after another
  (``Producer.commit_transactions`` with ``_trn_locks``, ``_transaction_producers``).

``check()`` runs before any faust object is made (``ccstream dedup`` and ``ccstream run``): if
any of these is missing it raises ``FaustCompatError`` naming what is missing and the installed
faust-streaming version, and the command exits 2 with that one line, instead of the agent
failing later on the path that loses events. ``pyproject.toml`` bounds faust-streaming to the
versions this module was tested with (``constraints.txt`` pins the one CI runs).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Mapping
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust.tables.manager import TableManager as _FaustTableManager
from faust.transport import consumer as _consumer
from faust.transport.drivers import aiokafka as _driver
from faust.types import StoreT
from mode.services import WaitResults as _WaitResults

from ccstream.errors import CcstreamError

# (module, class, attribute): every private name the pipeline uses
REQUIRED: tuple[tuple[str, str, str], ...] = (
    ("faust.transport.drivers.aiokafka", "Producer", "_transaction_producers"),
    ("faust.transport.drivers.aiokafka", "Producer", "_trn_locks"),
    ("faust.transport.consumer", "Consumer", "_add_gap"),
    ("faust.tables.base", "Collection", "_changelog_compacting"),
    ("faust.tables.base", "Collection", "_changelog_deleting"),
    ("faust.tables.base", "Collection", "_new_store"),
    ("mode.worker", "Worker", "_on_sigterm"),
    ("mode.worker", "Worker", "_on_sigint"),
    ("mode.worker", "Worker", "_schedule_shutdown"),
    ("faust.worker", "Worker", "spinner"),
    ("mode.services", "Service", "_stopped"),
    ("mode.services", "Service", "_crashed"),
    ("mode.worker", "Worker", "_sentinel_task"),
    ("faust.tables.manager", "TableManager", "_update_channels"),
    ("faust.transport.consumer", "Consumer", "_wait_next_records"),
    ("faust.transport.consumer", "Consumer", "_get_active_partitions"),
    ("faust.transport.consumer", "TransactionManager", "_start_transactions"),
    ("faust.transport.consumer", "TransactionManager", "_stop_transactions"),
    ("faust.transport.consumer", "TransactionManager", "_tps_to_transactional_ids"),
    ("faust.transport.drivers.aiokafka", "Consumer", "_new_consumer_thread"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_create_worker_consumer"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_highwaters"),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_ensure_consumer"),
)
# what ``prompt()`` replaces, read from the sources: a faust that changed one of these may need
# the replacement changed too (module, class, method, literal)
PROMPT_SOURCES: tuple[tuple[str, str, str, str], ...] = (
    ("faust.tables.manager", "TableManager", "on_start", "await self.sleep(1.0)"),
    ("faust.tables.manager", "TableManager", "on_start", "await self._update_channels()"),
    ("faust.tables.manager", "TableManager", "on_start", "await self.recovery.start()"),
    ("faust.transport.consumer", "Consumer", "_wait_next_records", "await self.sleep(1)"),
    ("mode.worker", "Worker", "_sentinel_task", "await asyncio.sleep(1.0)"),
    ("faust.transport.consumer", "Consumer", "_drain_messages", "getmany(timeout=1.0)"),
    # the per-record delivery PromptDelivery.wait_first runs inline
    ("faust.transport.consumer", "Consumer", "_drain_messages",
     "callback(message), self.suspend_flow.wait()"),
    ("faust.transport.drivers.aiokafka", "Producer", "commit_transactions",
     "await transaction_producer.send_offsets_to_transaction("),
    ("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_highwaters",
     "consumer.last_stable_offset(tp)"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "__init__",
     "self._fetch_max_wait_ms = fetch_max_wait_ms"),
    ("aiokafka.consumer.consumer", "AIOKafkaConsumer", "start",
     "fetch_max_wait_ms=self._fetch_max_wait_ms"),
)
# faust's worker consumer long-polls a fetch for 1.5 s (hard-coded); Kafka serves one request
# per connection at a time, so a seek, an offsets lookup or the first fetch of a resumed
# partition waited up to that long behind it at every step of a recovery
FETCH_MAX_WAIT_S = 0.1
# faust's fetch loop waits 1 s for records of the partitions active when it asked (or sleeps
# 1 s when none is): a partition resumed meanwhile (recovery starts or ends) waited that long
FETCH_POLL_S = 0.1
# mode keeps the event loop running 1 s after a worker stopped (Worker._sentinel_task)
SHUTDOWN_TICK_S = 0.05
# the recovery's progress per changelog partition (Recovery.__init__ makes them)
RECOVERY_PROGRESS_SOURCE = ("faust.tables.recovery", "Recovery", "__init__",
                            ("self.active_offsets", "self.active_highwaters"))
# how faust names a partition's transactional producer (TransactionManager.send)
TRANSACTIONAL_ID_SOURCE = ('faust.transport.consumer', 'TransactionManager', 'send',
                           'f"{self.app.conf.id}-{group}-{p}"')


class FaustCompatError(CcstreamError):
    """The installed faust-streaming lacks a private name the dedup worker relies on."""

    retriable = False
    exit_status = 2

    def __init__(self, missing: list[str]) -> None:
        super().__init__(
            f"faust-streaming {faust_version()} lacks {', '.join(missing)}, which the dedup "
            f"worker relies on (pipeline/faust_compat.py); install the version constraints.txt "
            f"pins")
        self.missing = missing


def faust_version() -> str:
    try:
        return version("faust-streaming")
    except PackageNotFoundError:
        return "(not installed)"


def check() -> None:
    """Raise ``FaustCompatError`` naming every missing private name (none: return)."""
    missing = []
    for module_name, class_name, attribute in REQUIRED:
        owner = _class(module_name, class_name)
        if owner is None or not _has(owner, attribute):
            missing.append(f"{module_name}.{class_name}.{attribute}")
    module_name, class_name, method, literal = TRANSACTIONAL_ID_SOURCE
    if literal not in _source(module_name, class_name, method):
        missing.append(f"the transactional id format {literal} in "
                       f"{module_name}.{class_name}.{method}")
    missing += [f"{literal!r} in {module_name}.{class_name}.{method}"
                for module_name, class_name, method, literal in PROMPT_SOURCES
                if literal not in _source(module_name, class_name, method)]
    module_name, class_name, method, attributes = RECOVERY_PROGRESS_SOURCE
    source = _source(module_name, class_name, method)
    missing += [f"{module_name}.{class_name}.{a[len('self.'):]}" for a in attributes
                if a not in source]
    if missing:
        raise FaustCompatError(missing)


def _source(module_name: str, class_name: str, method: str) -> str:
    owner = _class(module_name, class_name)
    function = getattr(owner, method, None) if owner is not None else None
    try:
        return inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        return ""


def _class(module_name: str, class_name: str) -> type | None:
    try:
        owner = getattr(import_module(module_name), class_name, None)
    except ImportError:
        return None
    return owner if isinstance(owner, type) else None


def _has(owner: type, attribute: str) -> bool:
    """A class attribute, or one declared in a class body's annotations (set in __init__)."""
    return hasattr(owner, attribute) or any(
        attribute in getattr(klass, "__annotations__", {}) for klass in owner.__mro__)


# -- the uses --------------------------------------------------------------------------------------
def transaction(app: Any, topic: str, partition: int) -> tuple[Any, asyncio.Lock] | None:
    """The transactional producer of ``topic``'s ``partition`` and its lock, or None."""
    group = app.assignor.group_for_topic(topic)
    transactional_id = f"{app.conf.id}-{group}-{partition}"
    driver: Any = app.producer
    producer = driver._transaction_producers.get(transactional_id)
    lock = driver._trn_locks.get(transactional_id)
    if producer is None or lock is None:
        return None
    return producer, lock


def member_id(app: Any) -> str | None:
    """The group member id of the worker's consumer (aiokafka's group coordinator holds it),
    or None when it cannot be read: used best effort only (``pipeline/dedup/members.py``), so
    a faust or aiokafka without these names makes it None rather than an exit at start."""
    try:
        consumer = app.consumer._thread._ensure_consumer()
        member = consumer._coordinator.member_id
    except (AttributeError, AssertionError, RuntimeError):
        return None
    return member if isinstance(member, str) and member else None


def transactional_id(app: Any, topic: str, partition: int) -> str:
    return f"{app.conf.id}-{app.assignor.group_for_topic(topic)}-{partition}"


async def add_gap(app: Any, tp: Any, first: int, last: int) -> None:
    """Tell faust's consumer that offsets ``first..last`` of ``tp`` were handled without it."""
    consumer: Any = app.consumer
    await consumer._add_gap(tp, first, last)


def recovery_remaining(app: Any, tp: Any, offset: int) -> int | None:
    """How many offsets of the active changelog partition ``tp`` faust's recovery still waits
    for after ``offset`` (None: ``tp`` is not being recovered as active)."""
    highwater = app.tables.recovery.active_highwaters.get(tp)
    if highwater is None or highwater < 0:
        return None
    return int(highwater) - offset


def recovery_highwaters(app: Any) -> dict[Any, int]:
    """The highwater (last offset before the stable end; -1: empty) of every changelog
    partition faust's recovery reads as active."""
    return {tp: int(h) for tp, h in app.tables.recovery.active_highwaters.items()
            if h is not None}


def recovery_reached_end(app: Any, tp: Any) -> None:
    """Tell faust's recovery that ``tp`` is read to its high watermark (what it concludes by
    itself only after two idle 5 s polls when the log ends in transaction markers)."""
    recovery = app.tables.recovery
    recovery.active_offsets[tp] = recovery.active_highwaters[tp]


class OpTable(faust.Table[bytes, bytes]):
    """A table whose changelog is op-coded (not compacted: its records are ops, not key/value
    updates; deleted by age) and whose store comes from ``make_store()``."""

    _changelog_compacting = False
    _changelog_deleting = True

    def _new_store(self) -> StoreT[bytes, bytes]:
        return self.make_store()

    def make_store(self) -> StoreT[bytes, bytes]:
        raise NotImplementedError


class Worker(faust.Worker):
    """``faust.Worker`` as both ``ccstream dedup`` and ``ccstream run`` start it: ccstream's
    logging kept, no spinner, and SIGTERM/SIGINT routed to ``on_signal`` (mode's private
    hooks), which by default schedules faust's own shutdown (``shutdown(sig)``)."""

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        kwargs.setdefault("override_logging", False)
        kwargs.setdefault("redirect_stdouts", False)
        kwargs.setdefault("quiet", True)
        super().__init__(app, **kwargs)
        # the spinner writes a "show cursor" escape to stdout even when it is not a terminal,
        # in front of the next JSON log line (which then no longer parses)
        self.spinner = None

    def _on_sigterm(self) -> None:
        self.on_signal(signal.SIGTERM)

    def _on_sigint(self) -> None:
        self.on_signal(signal.SIGINT)

    def on_signal(self, sig: signal.Signals) -> None:
        self.shutdown(sig)

    def shutdown(self, sig: signal.Signals) -> None:
        self._schedule_shutdown(sig)

    async def _sentinel_task(self) -> None:
        # mode runs the loop one more second after everything stopped, before closing it: a
        # second of every SIGTERM restart's stall (the old worker had exited 1 s sooner). One
        # short tick still lets the callbacks of the last cancellations run.
        await asyncio.sleep(SHUTDOWN_TICK_S)


# -- steady state: per-message delivery and transaction commits ---------------------------------
class _Resumed:
    """The rest of a coroutine that has already run up to its first suspension (``first``, what
    it yielded to the event loop), as an awaitable: each later step is the coroutine's own."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro, self.first = coro, first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value = self.coro, self.first
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - thrown in by the task: passed on
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _rest(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _Resumed(coro, first)


class PromptDelivery:
    """Consumer mixin: the fetch loop hands each record to the streams without four tasks.

    faust's fetch loop (``Consumer._drain_messages``) delivers every record with
    ``wait_first(callback(message), suspend_flow.wait())``, which makes four tasks (the
    delivery, the flow event, the service's stopped and crashed events) and an
    ``asyncio.wait`` per record: 28 % of the CPU of a worker whose agent does nothing
    (bench/bench_dedup_agent.py --floor). The delivery almost never suspends (the stream's
    buffer has room, flow is active), so it is run inline first; only if it does suspend is
    the rest of it awaited as faust does, racing the flow event. The stopped/crashed check
    and the result are faust's."""

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:  # noqa: ASYNC109
        service: Any = self
        if (len(coros) != 2 or timeout is not None or not asyncio.iscoroutine(coros[0])
                or service._stopped.is_set() or service._crashed.is_set()):
            return await super().wait_first(*coros, timeout=timeout)  # type: ignore[misc]
        delivery, other = coros
        try:
            first = delivery.send(None)
        except StopIteration as done:
            if asyncio.iscoroutine(other):
                other.close()  # never started: the flow event was not needed
            return _WaitResults([delivery], [done.value], False)
        return await super().wait_first(  # type: ignore[misc]
            _rest(delivery, first), other)


class Producer(_driver.Producer):
    """faust's aiokafka producer, committing the partitions' transactions concurrently.

    faust commits each partition's transaction in turn (``commit_transactions``: offsets
    to the transaction, EndTxn, begin the next), each under that partition's lock, which
    the agent waits for to append a batch: 6 partitions took 75-110 ms a round (p50, p99
    to 500 ms) and blocked the agent 8-13 % of the time at 2,000 events/s, so a record
    waited for the commit interval *plus* the whole round (bench/bench_latency.py). The
    transactions are independent (one transactional id, producer and lock each), so they
    are committed at the same time; a failure (a fenced producer) is raised once every
    partition's commit has ended, as faust raises it."""

    async def commit_transactions(self, tid_to_offset_map: Mapping[str, Mapping[Any, int]],
                                  group_id: str, start_new_transaction: bool = True) -> None:
        async def commit(transactional_id: str, offsets: Mapping[Any, int]) -> None:
            async with self._trn_locks[transactional_id]:
                producer = self._transaction_producers.get(transactional_id)
                if producer is None:
                    _driver.logger.warning(
                        f"Commit invoked for unknown transaction {transactional_id}")
                    return
                await producer.send_offsets_to_transaction(offsets, group_id)
                await producer.commit_transaction()
                if start_new_transaction:
                    await producer.begin_transaction()

        results = await asyncio.gather(*(commit(t, o) for t, o in tid_to_offset_map.items()),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


# -- prompt start, recovery and rebalance ----------------------------------------------------------
class TableManager(_FaustTableManager):
    """faust's table manager without its 1 s sleep before the tables register (and the group can
    be joined): every table of the dedup app exists before the app starts
    (``faust.App(TableManager=...)``)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class TransactionManager(_consumer.TransactionManager):
    """Each partition's transactional producer is started (InitProducerId, which also waits
    for the broker to abort a dead predecessor's transaction) and stopped at the same time as
    the others instead of one after another: ~0.1 s each, 0.8 s for 6 partitions before their
    recovery could even begin. Partitions' producers are independent (one transactional id,
    producer and lock each; faust's ``begin_transaction`` handles its own errors)."""

    async def on_rebalance(self, assigned: set[Any], revoked: set[Any],
                           newly_assigned: set[Any]) -> None:
        # faust stops the producers of revoked partitions only, and counts a partition that
        # stays here as a standby as not revoked: its producer kept running, was fenced by the
        # partition's new owner, and when the partition came back here faust began a
        # transaction on that fenced producer again, whose first send failed (the worker then
        # stops with exit 70: a restart per rebalance). Every producer of this app whose
        # partition is not active here now is stopped first.
        wanted = self._tps_to_transactional_ids(assigned)
        prefix = f"{self.app.conf.id}-"
        driver: Any = self.producer
        stale = sorted(t for t in driver._transaction_producers
                       if t.startswith(prefix) and t not in wanted)
        if stale:
            self.log.info("Stopping %r transactional producers of partitions not active here",
                          len(stale))
            await self._stop_transactions(stale)
        await super().on_rebalance(assigned, revoked, newly_assigned)

    async def _start_transactions(self, tids: Iterable[str]) -> None:
        await asyncio.gather(*(self.producer.maybe_begin_transaction(t) for t in tids))

    async def _stop_transactions(self, tids: Iterable[str]) -> None:
        await asyncio.gather(*(self.producer.stop_transaction(t) for t in tids))


class ConsumerThread(_driver.AIOKafkaConsumerThread):
    """The worker's aiokafka consumer, with a short fetch long-poll (``FETCH_MAX_WAIT_S``), and
    the changelog's highwaters asked of the broker."""

    async def _highwaters(self, partitions: list[Any]) -> Any:
        # In exactly-once faust takes a recovery's highwaters from the stable end the last
        # fetch response reported, which a new assignment knows only after its first fetch:
        # a recovery that asked sooner read -1, and either skipped a partition's whole
        # changelog (an empty filter) or crashed (ConsistencyError: the offset it holds is
        # above -1). Once the group's waits were cut (prompt()) it asked sooner, on every
        # rebalance. ListOffsets of a read_committed consumer answers that stable end itself.
        consumer: Any = self._ensure_consumer()
        return await consumer.end_offsets(partitions)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = round(FETCH_MAX_WAIT_S * 1000)
        return consumer


class Consumer(PromptDelivery, _driver.Consumer):
    """faust's consumer, whose fetch loop looks at the partitions it may read every
    ``FETCH_POLL_S`` instead of every second."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def getmany(self, timeout: float) -> AsyncIterator[Any]:
        return super().getmany(min(timeout, FETCH_POLL_S))

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109
        if self.flow_active and not self.app.client_only and not self._get_active_partitions():
            await self.sleep(FETCH_POLL_S)  # faust sleeps 1 s here: nothing may be read yet
            return {}, set()
        return await super()._wait_next_records(timeout)


class Transport(_driver.Transport):
    Consumer = Consumer
    Producer = Producer
    TransactionManager = TransactionManager


def prompt(app: faust.App) -> None:
    """Give ``app`` (not started yet) the consumer and transaction manager above; its table
    manager is ``TableManager`` (``faust.App(TableManager=...)``)."""
    app.transport = Transport(app.conf.broker_consumer, app)
