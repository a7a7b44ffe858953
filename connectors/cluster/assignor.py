"""The slot assignor as aiokafka calls it: JoinGroup metadata out, the leader's decision in.

aiokafka calls these methods on the object passed as ``partition_assignment_strategy``, so an
instance with state works: ``metadata()`` asks the supervisor for this member's ``Claim`` at each
(re)join (what it runs now; nothing once its lease expired), ``assign()`` runs on the leader only
and delegates to the pure ``policy.slots.assign``, ``on_assignment()`` keeps the note the leader
attached to this member's assignment (``error``: the slot topic was repartitioned).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from ccstream import metrics
from ccstream.logs import get_logger
from connectors.policy import slots as policy
from connectors.policy.slots import CLAIM_VERSION, Assignment, Claim

NAME = "ccstream-slots"


class SlotAssignor(AbstractPartitionAssignor):  # type: ignore[misc]  # aiokafka is untyped
    name = NAME

    def __init__(self, topic: str, claim: Callable[[], Claim]) -> None:
        self.topic = topic
        self.claim = claim
        self.log = get_logger("ccstream.cluster")
        self.led = 0                          # assignments computed here (we were the leader)
        self.decision: Assignment | None = None
        self.note: dict[str, Any] = {}        # what the leader said with our last assignment

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(CLAIM_VERSION, sorted(topics),
                                              self.claim().encode())

    def assign(self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
               ) -> dict[str, ConsumerProtocolMemberAssignment]:
        count = len(cluster.partitions_for_topic(self.topic) or ())
        claims = {member: Claim.decode(meta.user_data) for member, meta in members.items()}
        decision = policy.assign(claims, count)
        self.led += 1
        self.decision = decision
        metrics.CLUSTER_CONFIG_MISMATCH.set(len(decision.mismatched))
        for member in decision.mismatched:
            claim = claims[member]
            self.log.warning("cluster.config_mismatch", member=member,
                             instance=claim.instance if claim else None,
                             fingerprint=claim.fingerprint if claim else None)
        if decision.error is not None:
            self.log.error("cluster.slot_count_changed", slots=count,
                           members={m: c.slots if c else None for m, c in claims.items()})
        return {
            member: ConsumerProtocolMemberAssignment(
                CLAIM_VERSION, [(self.topic, sorted(decision.owners.get(member, ())))],
                orjson.dumps(decision.note(member)))
            for member in members
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        try:
            note = orjson.loads(assignment.user_data or b"{}")
        except orjson.JSONDecodeError:
            note = {}
        self.note = note if isinstance(note, dict) else {}
