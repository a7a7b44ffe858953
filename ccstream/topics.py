"""Creating ccstream's topics when they are missing, and reading a topic's configuration.

Contract: missing topics are created at start-up (partitions and replication factor from the
configuration, the cursor topic compacted); topics that already exist are used as they are.

The cursor topic is compacted *and* rolled hourly (``segment.ms``), with a bound on how long a
superseded value may wait for compaction (``max.compaction.lag.ms``): Kafka never compacts the
active segment, whose default roll is a week or a gigabyte, so without these a cursor topic
written once a second per stream would only ever grow and start-up would read all of it. In
cluster mode the slot topic (``topics.slots``, ``cluster.slots`` partitions, no records) is
created too; its partition count, once created, is the truth for the slot count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from ccstream.config import Config


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


# room for the key, the contract's headers and the record overhead around a frame's bytes
RECORD_HEADROOM_BYTES = 64 * 1024


def max_record_bytes(max_frame_bytes: int) -> int:
    """The largest raw/clean record ccstream writes: a frame of the largest accepted size plus
    its key and headers. The producer's ``max_request_size`` and the topics'
    ``max.message.bytes`` are sized from it, so that an accepted frame is never refused by Kafka
    (Kafka's default, 1 MiB, is smaller than a 1 MiB frame plus headers)."""
    return max_frame_bytes + RECORD_HEADROOM_BYTES


# the cursor topic's compaction: roll the active segment hourly, and compact a superseded cursor
# within the hour (a start-up reads at most about two hours of cursor records)
CURSOR_TOPIC_COMPACTION = {
    "cleanup.policy": "compact",
    "segment.ms": str(3_600_000),
    "max.compaction.lag.ms": str(3_600_000),
}


def contract_topics(config: Config) -> list[TopicSpec]:
    """The four topics of the contract, sized from ``[kafka]`` (plus the slot topic in cluster
    mode)."""
    k, t = config.kafka, config.topics
    min_isr = {"min.insync.replicas": "2"} if k.replication_factor >= 3 else {}
    sized = {**min_isr,
             "max.message.bytes": str(max_record_bytes(config.connector.max_frame_bytes))}
    return [
        TopicSpec(t.raw, k.partitions, k.replication_factor, dict(sized)),
        TopicSpec(t.clean, k.partitions, k.replication_factor, dict(sized)),
        TopicSpec(t.dlq, 1, k.replication_factor, dict(min_isr)),
        # one partition: the cursor topic is small, and one partition keeps start-up reads simple
        TopicSpec(t.cursors, 1, k.replication_factor, {**CURSOR_TOPIC_COMPACTION, **min_isr}),
        # the slot topic: no records, ever; its partitions are what the group assigns
        *([TopicSpec(t.slots, config.cluster.slots, k.replication_factor,
                     {"retention.ms": str(3_600_000), **min_isr})]
          if config.cluster.enabled else []),
    ]


async def ensure_topics(bootstrap_servers: str, specs: list[TopicSpec]) -> list[str]:
    """Create the topics of ``specs`` that do not exist; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        for spec in missing:
            try:
                await admin.create_topics([
                    NewTopic(spec.name, spec.partitions, spec.replication_factor,
                             topic_configs=dict(spec.configs))
                ])
                created.append(spec.name)
            except TopicAlreadyExistsError:  # another process won the race: use theirs
                pass
        return created
    finally:
        await admin.close()


async def topic_config(bootstrap_servers: str, topic: str) -> dict[str, str]:
    """The effective configuration of ``topic`` as the broker reports it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
        out: dict[str, str] = {}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    out[entry[0]] = entry[1]
        return out
    finally:
        await admin.close()


async def partition_count(bootstrap_servers: str, topic: str) -> int:
    """How many partitions ``topic`` has (0 if it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        for entry in described:
            if entry.get("topic") == topic and not entry.get("error_code"):
                return len(entry.get("partitions", []))
        return 0
    finally:
        await admin.close()


async def committed_offsets(bootstrap_servers: str, group_id: str, topic: str,
                            partitions: int) -> dict[int, int]:
    """The offsets ``group_id`` has committed for ``topic``'s partitions (absent: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        found = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        return {tp.partition: int(meta.offset) for tp, meta in found.items()
                if meta is not None and meta.offset >= 0}
    finally:
        await admin.close()
