"""This instance in the group: its consumer on the slot topic, and its membership lease.

``GroupMember`` is the aiokafka consumer that joins ``cluster.group_id`` with the slot assignor
and hands the rebalance callbacks to the supervisor; it polls forever (an idle consumer leaves
the group after ``max_poll_interval_ms``) and leaves the group only when told to, after the
slots are released.

``LeaseKeeper`` carries out ``policy.lease``: every heartbeat interval it asks the coordinator
to describe the group, and an answer that lists this instance's client id renews the lease from
the moment the question was sent; a watcher notices the expiry at its deadline. Being *listed*
is what counts, not the slots the listing shows: while a rebalance is under way the described
assignments are in flux, but a listed member cannot have been evicted, so nobody else can have
been given its slots (the design's "listed with our slots" would expire leases on every
rebalance).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from ccstream import metrics
from ccstream.config import Config
from ccstream.logs import BoundLogger
from connectors.cluster.assignor import SlotAssignor
from connectors.cluster.group import GroupReader
from connectors.kafka.delivery import safe_error
from connectors.policy.lease import Lease, LeaseState

# the leader notices a repartitioned slot topic at its next metadata refresh
METADATA_MAX_AGE_S = 10.0


def instance_client_id(config: Config) -> str:
    """This process's client id in the group: unique per process, readable in ``owners``."""
    name = config.cluster.instance_id or socket.gethostname()
    return f"{config.kafka.client_id}-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, topic: str, revoked: Callable[[], Awaitable[None]],
                 assigned: Callable[[frozenset[int]], None],
                 fail: Callable[[str], None]) -> None:
        self.topic = topic
        self.revoked = revoked
        self.assigned = assigned
        self.fail = fail

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # aiokafka logs and swallows a listener's exception: fail the instance instead
        try:
            await self.revoked()
        except Exception as err:
            self.fail(f"rebalance handling failed: {safe_error(err)}")
            raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            self.assigned(frozenset(tp.partition for tp in assigned if tp.topic == self.topic))
        except Exception as err:
            self.fail(f"assignment handling failed: {safe_error(err)}")
            raise


class GroupMember:
    def __init__(self, config: Config, instance: str, assignor: SlotAssignor, *,
                 revoked: Callable[[], Awaitable[None]],
                 assigned: Callable[[frozenset[int]], None], fail: Callable[[str], None],
                 log: BoundLogger) -> None:
        cluster = config.cluster
        self.interval = cluster.heartbeat_interval_s
        self.log = log
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=config.kafka.bootstrap_servers,
            client_id=instance, group_id=cluster.group_id,
            group_instance_id=cluster.instance_id, enable_auto_commit=False,
            partition_assignment_strategy=(assignor,),
            session_timeout_ms=int(cluster.session_timeout_s * 1000),
            heartbeat_interval_ms=int(cluster.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(cluster.rebalance_timeout_s * 1000),
            metadata_max_age_ms=int(METADATA_MAX_AGE_S * 1000),
        )
        self.consumer.subscribe([config.topics.slots],
                                listener=_Listener(config.topics.slots, revoked, assigned, fail))
        self._started = False

    async def start(self) -> None:
        await self.consumer.start()
        self._started = True

    async def poll(self) -> None:
        """Forever. Errors of the group coordination come out here: retriable ones are waited
        out, others (no permission on the group, say) end this and so the instance."""
        while True:
            try:
                await self.consumer.getmany(timeout_ms=1000)
            except KafkaError as err:
                if not getattr(err, "retriable", False):
                    raise
                self.log.warning("cluster.group_error", error=safe_error(err))
                await asyncio.sleep(self.interval)

    async def leave(self) -> None:
        """Leave the group (a static member only stops: it cannot leave)."""
        if self._started:
            self._started = False
            await self.consumer.stop()


class LeaseKeeper:
    def __init__(self, config: Config, instance: str, clock: Callable[[], float], *,
                 on_held: Callable[[], None], on_expired: Callable[[], None],
                 log: BoundLogger) -> None:
        self.instance = instance
        self.clock = clock
        self.interval = config.cluster.heartbeat_interval_s
        self.lease = Lease(config.cluster.lease())
        self.reader = GroupReader(config.kafka.bootstrap_servers, config.cluster.group_id,
                                  config.topics.slots, client_id=instance)
        self.on_held = on_held
        self.on_expired = on_expired
        self.log = log
        self._now = asyncio.Event()
        self._started = False

    def allowed(self) -> bool:
        return self.lease.valid(self.clock())

    def denied(self) -> None:
        """Someone met an expired lease: act on it now, not at the next watch tick."""
        self._changed(self.lease.observe(self.clock()))

    def renew_now(self) -> None:
        self._now.set()

    async def start(self) -> None:
        await self.reader.start()
        self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.reader.close()

    async def renew(self) -> None:
        while True:
            sent = self.clock()
            listed = False
            try:
                async with asyncio.timeout(max(self.interval, 1.0)):
                    view = await self.reader.describe()
                listed = view.member(self.instance) is not None
            except (KafkaError, TimeoutError, OSError) as err:
                self.log.debug("cluster.describe_failed", error=safe_error(err))
            now = self.clock()
            self._changed(self.lease.renew(sent, now) if listed else self.lease.observe(now))
            self._now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._now.wait(), self.interval)

    async def watch(self) -> None:
        while True:
            left = self.lease.remaining(self.clock())
            await asyncio.sleep(min(self.interval, max(0.02, left)))
            self._changed(self.lease.observe(self.clock()))

    def _changed(self, change: LeaseState | None) -> None:
        if change is LeaseState.HELD:
            metrics.CLUSTER_MEMBER.set(1)
            self.log.info("cluster.lease_renewed", lease_s=self.lease.duration_s,
                          expiries=self.lease.expiries)
            self.on_held()
        elif change is LeaseState.EXPIRED:
            metrics.CLUSTER_MEMBER.set(0)
            metrics.CLUSTER_LEASE_EXPIRED.inc()
            self.on_expired()

