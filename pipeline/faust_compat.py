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
  ``ccstream run``'s own shutdown order, and faust's start-up ``spinner`` (turned off: it writes a
  terminal escape in front of JSON log lines).

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
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import faust
from faust.types import StoreT

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
)
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
