"""A killed worker's group member is removed by the worker started after it (members.py), on the
real broker: a consumer in a child process joins the worker's group with a 60 s session and is
killed with SIGKILL; its member stays in the group (the broker waits for the session) until
``remove_predecessors`` finds its record and sends the LeaveGroup the dead worker could not,
after which a new member joins without waiting. A record of a live process is never acted on."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from support.dedup import write_config

from ccstream.topics import TopicSpec, ensure_topics
from pipeline.dedup import members

pytestmark = pytest.mark.kafka

MEMBER = textwrap.dedent("""
    import asyncio, sys
    from aiokafka import AIOKafkaConsumer

    async def main():
        consumer = AIOKafkaConsumer(sys.argv[2], bootstrap_servers=sys.argv[1],
                                    group_id=sys.argv[3], session_timeout_ms=60_000,
                                    heartbeat_interval_ms=1_000, rebalance_timeout_ms=60_000)
        await consumer.start()
        while not consumer.assignment():
            await asyncio.sleep(0.05)
        print(consumer._coordinator.member_id, flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def _members(bootstrap: str, group: str) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.groups
        return list(described[5])  # (error, group, state, protocol_type, protocol, members ...)
    finally:
        await admin.close()


def _member_process(bootstrap: str, topic: str, group: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", MEMBER, bootstrap, topic, group],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    member_id = proc.stdout.readline().strip()
    assert member_id, "the member process never joined"
    return proc, member_id


async def test_a_killed_workers_member_is_removed_and_a_live_ones_record_is_kept(
        bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "ccstream.toml", bootstrap, topic_prefix,
                          data_dir=str(tmp_path / "data"))
    group, topic = config.dedup.app_id, config.topics.raw
    await ensure_topics(bootstrap, [TopicSpec(topic, 1, 1)])
    folder = members.directory(config)
    killed, killed_id = await asyncio.to_thread(_member_process, bootstrap, topic, group)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    later: subprocess.Popen[str] | None = None
    try:
        members.record(folder, killed_id, pid=killed.pid)
        members.record(folder, "a-live-workers-member", pid=alive.pid)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(10)
        # the coordinator still holds the dead member: its 60 s session has not ended
        assert [m[0] for m in await _members(bootstrap, group)] == [killed_id]
        assert await members.remove_predecessors(config, folder) == 1
        assert await _members(bootstrap, group) == []
        assert [r.member_id for r in members.read(folder)] == ["a-live-workers-member"]
        assert await members.remove_predecessors(config, folder) == 0
        # and the group takes a new member at once (it would otherwise wait for the dead one)
        later, later_id = await asyncio.to_thread(_member_process, bootstrap, topic, group)
        assert [m[0] for m in await _members(bootstrap, group)] == [later_id]
    finally:
        for proc in (killed, alive, later):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


def test_which_records_are_stale() -> None:
    """Gone processes and our own pid (a reused number) are stale; live ones are not."""
    rows = [members.Recorded(Path(f"member-{p}.json"), p, f"m{p}") for p in (10, 11, 12)]
    stale = members.stale(rows, own_pid=12, alive=lambda pid: pid == 11)
    assert [r.pid for r in stale] == [10, 12]
