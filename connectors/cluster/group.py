"""The consumer group of the instances as the coordinator describes it (``DescribeGroups``).

Three readers: the membership lease (is this instance listed?), the start-up check (does a
running group use another slot count?) and ``ccstream owners`` (slot -> instance -> streams).
Each member's JoinGroup metadata carries its ``Claim`` (``policy.slots``) and its assignment the
slots the leader gave it; both are decoded here with aiokafka's consumer-protocol structures.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocol
from aiokafka.errors import KafkaError, for_code

from connectors.policy.slots import Claim

# group states in which the members listed are the group's members
LIVE_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance"})


@dataclass(frozen=True)
class MemberView:
    member_id: str
    client_id: str
    host: str
    claim: Claim | None
    slots: frozenset[int]

    @property
    def instance(self) -> str:
        """The process this member is: the claim's instance (see ``GroupView.member``)."""
        return self.claim.instance if self.claim is not None else self.client_id


@dataclass(frozen=True)
class GroupView:
    group_id: str
    state: str
    protocol: str
    members: tuple[MemberView, ...] = field(default_factory=tuple)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES and bool(self.members)

    def member(self, instance: str) -> MemberView | None:
        """The member that is ``instance`` (a process's client id), known by the claim in its
        join metadata, else by its client id.

        The claim first: when a static member (``instance_id``) is replaced by a new process
        with the same instance id, the coordinator keeps the *old* process's client id on the
        member (Kafka's ``replaceStaticMember`` copies it) but stores the new join's metadata.
        Matching client ids would leave the new process without a lease forever (its slots never
        start) and give one to the replaced process, a zombie whose slots are now another's."""
        return next((m for m in self.members if m.instance == instance), None)

    def owner_of(self, slot: int) -> MemberView | None:
        return next((m for m in self.members if slot in m.slots), None)


def _claim(raw: bytes | None) -> Claim | None:
    if not raw:
        return None
    try:
        return Claim.decode(ConsumerProtocol.METADATA.decode(raw).user_data)
    except Exception:  # noqa: BLE001 (another program's metadata: not ours, not an error)
        return None


def _slots(raw: bytes | None, topic: str) -> frozenset[int]:
    if not raw:
        return frozenset()
    try:
        assignment = ConsumerProtocol.ASSIGNMENT.decode(raw)
    except Exception:  # noqa: BLE001 (as above)
        return frozenset()
    return frozenset(tp.partition for tp in assignment.partitions() if tp.topic == topic)


def parse(response: Any, group_id: str, topic: str) -> GroupView:
    """One group of a ``DescribeGroups`` response (raw aiokafka structure)."""
    for group in response.groups:
        error_code, name, state, _protocol_type, protocol, members = group[:6]
        if name != group_id:
            continue
        if error_code:
            raise for_code(error_code)(f"describing group {group_id}")
        views = tuple(MemberView(str(m[0]), str(m[1]), str(m[2]), _claim(m[3]), _slots(m[4], topic))
                      for m in members)
        return GroupView(group_id, str(state), str(protocol), views)
    return GroupView(group_id, "Dead", "")


class GroupReader:
    """A kept-open admin client that describes one group (the lease asks every heartbeat)."""

    def __init__(self, bootstrap_servers: str, group_id: str, topic: str, *,
                 client_id: str = "ccstream") -> None:
        self.group_id = group_id
        self.topic = topic
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers,
                                          client_id=f"{client_id}-group")
        self._coordinator: int | None = None
        self._started = False

    async def start(self) -> None:
        await self._admin.start()
        self._started = True

    async def close(self) -> None:
        if self._started:
            await self._admin.close()

    async def describe(self) -> GroupView:
        try:
            if self._coordinator is None:
                self._coordinator = await self._admin.find_coordinator(self.group_id)
            responses = await self._admin.describe_consumer_groups(
                [self.group_id], group_coordinator_id=self._coordinator)
            view = GroupView(self.group_id, "Dead", "")
            for response in responses:
                view = parse(response, self.group_id, self.topic)
        except KafkaError:
            self._coordinator = None  # moved, or gone: look it up again next time
            raise
        return view


async def describe_once(bootstrap_servers: str, group_id: str, topic: str, *,
                        timeout_s: float = 30.0) -> GroupView:
    """The group now; retriable answers (no coordinator yet: a fresh cluster creates its offsets
    topic on the first group) are retried for up to ``timeout_s``."""
    reader = GroupReader(bootstrap_servers, group_id, topic)
    await reader.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while True:
            try:
                return await reader.describe()
            except KafkaError as err:
                if not getattr(err, "retriable", False) or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.2)
    finally:
        await reader.close()
