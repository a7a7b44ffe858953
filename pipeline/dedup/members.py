"""A restarted worker takes its killed predecessor's place at once, without static membership.

Why: a worker killed with kill -9 sends no LeaveGroup, so the group coordinator keeps its
member until its session times out (``session_timeout_s``, 10 s), and the worker started in its
place waits that long for its partitions: clean stops for ten seconds at every crash. Static
membership (``[dedup] instance_id``) avoids the wait, at the price that a worker stopped for
good is replaced only after its session. This module avoids it for dynamic members too.

How: every worker writes its group member id to ``member-<pid>.json`` in a directory of its
machine (``[dedup] data_dir``, else ``$CCSTREAM_CACHE`` or ``~/.cache/ccstream``, per app id)
after each rebalance, and removes the file when it stops cleanly. A worker starting finds the
files of workers of the same app id on this machine; a file whose process is gone (kill -9,
OOM kill, a crash) names a member the coordinator still waits for, and the starting worker sends
a ``LeaveGroup`` for that member id, as the dead worker would have: the group rebalances at once.
A live process's file is never acted on (``stale`` says which are gone; a pid equal to our own
is a predecessor whose number was reused, as in a container where every start is the same pid).
This is best effort: any failure is logged and the worker starts anyway, waiting for the
session as before. Exactly once does not depend on it: the dead member's transactional
producers are fenced by the new owner's, whenever the partitions move.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.protocol.group import LeaveGroupRequest

from ccstream.config import Config
from ccstream.logs import get_logger
from ccstream.paths import cache_root

log = get_logger("ccstream.dedup")
PREFIX = "member-"
_ERRORS = {0: "removed", 25: "unknown_member"}   # LeaveGroup error codes read here


@dataclass(frozen=True)
class Recorded:
    path: Path
    pid: int
    member_id: str


def directory(config: Config) -> Path:
    """Where this machine's workers of ``config``'s app id record their member ids (the
    fetched broker's cache root: ``$CCSTREAM_CACHE`` or ``~/.cache/ccstream``)."""
    if config.dedup.data_dir:
        return Path(config.dedup.data_dir) / "members"
    return cache_root() / "dedup-members" / re.sub(r"[^A-Za-z0-9._-]", "_", config.dedup.app_id)


def stale(recorded: list[Recorded], own_pid: int, alive: Callable[[int], bool]) -> list[Recorded]:
    """The records whose worker is gone: its process does not exist, or its pid is ours (a
    predecessor's number reused; we have written nothing yet)."""
    return [r for r in recorded if r.pid == own_pid or not alive(r.pid)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def read(folder: Path) -> list[Recorded]:
    """Every readable record in ``folder`` (a torn or foreign file is skipped)."""
    found: list[Recorded] = []
    for path in sorted(folder.glob(f"{PREFIX}*.json")):
        try:
            doc = orjson.loads(path.read_bytes())
            found.append(Recorded(path, int(doc["pid"]), str(doc["member_id"])))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return found


def record(folder: Path, member_id: str, pid: int | None = None) -> Path:
    """Write (atomically) this process's member id."""
    pid = os.getpid() if pid is None else pid
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PREFIX}{pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"pid": pid, "member_id": member_id}))
    tmp.replace(path)
    return path


def forget(folder: Path, pid: int | None = None) -> None:
    """Remove this process's record (a clean stop: the worker left the group itself)."""
    with contextlib.suppress(OSError):
        (folder / f"{PREFIX}{os.getpid() if pid is None else pid}.json").unlink()


async def remove_predecessors(config: Config, folder: Path, timeout_s: float = 5.0) -> int:
    """Send a LeaveGroup for every member id of a gone worker of this machine; how many the
    coordinator removed. Never raises: the worker starts anyway."""
    gone = stale(read(folder), os.getpid(), pid_alive)
    if not gone:
        return 0
    removed = 0
    client = AIOKafkaClient(bootstrap_servers=config.kafka.bootstrap_servers,
                            request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s * 2):
            await client.bootstrap()
            node = await client.coordinator_lookup(CoordinationType.GROUP, config.dedup.app_id)
            for dead in gone:
                response = await client.send(node, LeaveGroupRequest(config.dedup.app_id,
                                                                     dead.member_id))
                outcome = _ERRORS.get(response.error_code, f"error_{response.error_code}")
                removed += outcome == "removed"
                log.info("dedup.predecessor_removed", pid=dead.pid, member_id=dead.member_id,
                         outcome=outcome)
                if outcome in _ERRORS.values():
                    forget(folder, dead.pid)
    except Exception as err:  # noqa: BLE001 (best effort: the session timeout still applies)
        log.warning("dedup.predecessor_not_removed", error=repr(err))
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return removed
