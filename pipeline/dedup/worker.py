"""Running the dedup worker: topics first, then the Faust worker until SIGTERM/SIGINT.

The broker does not auto-create topics, so everything the worker subscribes or writes exists
before faust starts: the contract topics (missing ones are created), and the filter's changelog
with as many partitions as the raw topic has *now* (a raw topic made by anyone, of any size),
not compacted (its records are ops, not key/value updates) and deleted by age.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ccstream import logs
from ccstream.config import Config, ConfigError
from ccstream.topics import TopicSpec, contract_topics, ensure_topics, partition_count
from pipeline import faust_compat
from pipeline.dedup import members
from pipeline.dedup.app import DedupAgent, Topology, build_app, changelog_retention_s
from pipeline.dedup.table import changelog_topic_name

log = logs.get_logger("ccstream.dedup")


async def prepare(config: Config) -> Topology:
    """Create missing topics and read the partition counts the worker is sized from."""
    bootstrap = config.kafka.bootstrap_servers
    t = config.topics
    raw_n = await partition_count(bootstrap, t.raw)
    specs = contract_topics(config)
    if raw_n:  # clean follows an existing raw topic's size, so partitions map one to one
        specs = [s if s.name != t.clean else TopicSpec(s.name, raw_n, s.replication_factor,
                                                       s.configs) for s in specs]
    await ensure_topics(bootstrap, specs)
    raw_n = await _partitions(bootstrap, t.raw)
    clean_n = await _partitions(bootstrap, t.clean)
    if not raw_n or not clean_n:
        raise ConfigError("topics.raw", f"topic {t.raw} or {t.clean} could not be created")
    changelog = changelog_topic_name(config.dedup.app_id)
    retention_ms = int(changelog_retention_s(config) * 1000)
    await ensure_topics(bootstrap, [TopicSpec(
        changelog, raw_n, config.kafka.replication_factor,
        {"cleanup.policy": "delete", "retention.ms": str(retention_ms)},
    )])
    found = await _partitions(bootstrap, changelog)
    if found != raw_n:
        raise ConfigError("dedup.app_id", f"changelog topic {changelog} has {found} partitions "
                          f"but {t.raw} has {raw_n}; use a new app_id after resizing raw")
    return Topology(t.raw, t.clean, t.dlq, changelog, raw_n, clean_n)


async def _partitions(bootstrap: str, topic: str, timeout_s: float = 15.0) -> int:
    """The partition count of a topic, waiting for a just-created topic's metadata."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = await partition_count(bootstrap, topic)
        if found or loop.time() >= deadline:
            return found
        await asyncio.sleep(0.2)


def start(config: Config, agent_type: type[DedupAgent] | None = None, *,
          worker_class: type[faust_compat.Worker] = faust_compat.Worker, serve_metrics: bool = True,
          **worker_kwargs: Any) -> tuple[int, faust_compat.Worker]:
    """The one start-up of the Faust worker (``ccstream dedup`` and ``ccstream run``): check
    faust's private names, prepare the topics, build the app, run the worker in this thread
    until it stops; its exit status and the worker."""
    faust_compat.check()
    logs.configure(config.log.level, config.log.format)
    topo = asyncio.run(prepare(config))
    folder = members.directory(config)
    if config.dedup.instance_id is None:
        # a killed predecessor's member leaves the group now, not at its session's end
        asyncio.run(members.remove_predecessors(config, folder))
    app, _ = build_app(config, topo, agent_type)
    log.info("dedup.starting", app_id=config.dedup.app_id, raw=topo.raw, clean=topo.clean,
             partitions=topo.raw_partitions, strict=config.dedup.strict,
             window_s=config.dedup.window_s)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if serve_metrics and config.metrics.port is not None:
        from ccstream.metrics import serve

        loop.run_until_complete(serve(config.metrics.host, config.metrics.port))
    worker = worker_class(app, loop=loop, loglevel=logging.getLogger().level, **worker_kwargs)
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    if code == 0:
        members.forget(folder)  # a clean stop: the worker left the group itself
    return code, worker


def run(config: Config, agent_type: type[DedupAgent] | None = None) -> int:
    """``ccstream dedup``'s worker process: the worker until it is stopped; its exit status."""
    code, _ = start(config, agent_type)
    log.info("dedup.stopped", exit_code=code)
    return code
