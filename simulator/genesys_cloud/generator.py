"""An org's activity, pure: queues, users, conversations, presence and routing status.

``Org`` is one OAuth client's organisation (seeded ids). ``Generator.step(now)`` makes one thing
happen and returns the notifications it publishes; it also writes the truth into the
``ActivityStore`` behind the analytics API. Shapes follow s.8's dedup key fields:

- ``v2.routing.queues.{q}.conversations`` / ``v2.users.{u}.conversations``: a conversation
  snapshot with ``eventBody.id`` = conversationId; every step changes it, so distinct snapshots
  hash differently;
- ``v2.users.{u}.presence``: ``eventBody.modifiedDate``, strictly increasing per user (ms);
- ``v2.users.{u}.routingStatus``: ``eventBody.routingStatus.startTime``, strictly increasing.

Times are whole milliseconds, so that the ISO text and the store agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from simulator.genesys_cloud.analytics import (
    ActivityStore,
    Conversation,
    Participant,
    Segment,
    Session,
    StatusRecord,
)
from simulator.genesys_cloud.model import Rng, iso_ms, new_uuid, queue_topic, user_topic
from simulator.genesys_cloud.settings import GcClient

PRESENCES = ("AVAILABLE", "AWAY", "BUSY", "ON_QUEUE", "BREAK", "MEAL", "MEETING", "OFFLINE")
ROUTING = ("OFF_QUEUE", "IDLE", "INTERACTING", "NOT_RESPONDING", "COMMUNICATING")


@dataclass(frozen=True)
class Notification:
    client_id: str
    topic: str
    body: dict[str, Any]

    def frame(self, correlation_id: str, **extra: Any) -> bytes:
        """The frame's bytes (s.5): ``topicName``, ``version``, ``eventBody``, ``metadata``."""
        return orjson.dumps({"topicName": self.topic, "version": "2", "eventBody": self.body,
                             "metadata": {"CorrelationId": correlation_id}, **extra})


class Org:
    """One OAuth client's organisation: seeded queue and user ids."""

    def __init__(self, client: GcClient, rng: Rng) -> None:
        self.client_id = client.client_id
        self.org_id = new_uuid(rng)
        self.queues = [new_uuid(rng) for _ in range(client.queues)]
        self.users = [new_uuid(rng) for _ in range(client.users)]
        self.queue_names = {q: f"Queue {i + 1}" for i, q in enumerate(self.queues)}
        self.user_names = {u: f"Agent {i + 1}" for i, u in enumerate(self.users)}
        self.presence_ids = {p: new_uuid(rng) for p in PRESENCES}


@dataclass
class _Live:
    conversation: Conversation
    customer: Participant
    acd: Segment
    agent: Participant | None = None
    step: int = 0


class Generator:
    def __init__(self, org: Org, rng: Rng, store: ActivityStore, now: float,
                 max_conversations: int | None = None) -> None:
        self.org = org
        self.rng = rng
        self.store = store
        self.max_conversations = max_conversations or max(2, 2 * len(org.queues))
        self._live: dict[str, _Live] = {}
        self._busy: set[str] = set()
        self._last_ms: dict[str, int] = {}
        start = self._ms(now, "org") / 1000
        for user in org.users:
            activity = store.user(user)
            activity.presence.append(StatusRecord(start, "OFFLINE",
                                                  presence_id=org.presence_ids["OFFLINE"]))
            activity.routing.append(StatusRecord(start, "OFF_QUEUE"))

    def _ms(self, now: float, entity: str) -> int:
        """Whole ms, strictly increasing per entity (distinct snapshots, distinct times)."""
        ms = max(int(now * 1000), self._last_ms.get(entity, 0) + 1)
        self._last_ms[entity] = ms
        return ms

    def step(self, now: float) -> list[Notification]:
        roll = self.rng.random()
        if self.org.queues and roll < 0.6:
            if self._live and (roll < 0.35 or len(self._live) >= self.max_conversations):
                return self._advance(now)
            return self._start(now)
        if not self.org.users:
            return []
        if roll < 0.8:
            return self._presence(now)
        return self._routing(now)

    # -- conversations --------------------------------------------------------------------------
    def _start(self, now: float) -> list[Notification]:
        rng, org = self.rng, self.org
        queue = rng.choice(org.queues)
        cid = new_uuid(rng)
        t = self._ms(now, cid) / 1000
        customer = Participant(new_uuid(rng), "customer",
                               sessions=[Session(new_uuid(rng), "voice",
                                                 [Segment(t, None, "interact")])])
        acd_segment = Segment(t, None, "interact", queue)
        acd = Participant(new_uuid(rng), "acd", sessions=[Session(new_uuid(rng), "voice",
                                                                  [acd_segment])])
        conversation = Conversation(cid, t, queue, participants=[customer, acd])
        self.store.conversations[cid] = conversation
        self._live[cid] = _Live(conversation, customer, acd_segment)
        return [self._conversation_note(queue_topic(queue), self._live[cid], t)]

    def _advance(self, now: float) -> list[Notification]:
        live = self._live[self.rng.choice(sorted(self._live))]
        conversation = live.conversation
        t = self._ms(now, conversation.id) / 1000
        free = [u for u in self.org.users if u not in self._busy]
        if live.agent is None and free and self.rng.random() < 0.85:
            user = self.rng.choice(free)
            self._busy.add(user)
            live.acd.end = t
            live.agent = Participant(new_uuid(self.rng), "agent", user, [
                Session(new_uuid(self.rng), "voice", [Segment(t, None, "interact")])])
            conversation.participants.append(live.agent)
        else:
            self._end(live, t)
        notes = [self._conversation_note(queue_topic(conversation.queue_id), live, t)]
        if live.agent is not None and live.agent.user_id is not None:
            notes.append(self._conversation_note(
                user_topic(live.agent.user_id, "conversations"), live, t))
        return notes

    def _end(self, live: _Live, t: float) -> None:
        conversation = live.conversation
        for segment in conversation.segments():
            if segment.end is None:
                segment.end = t
        conversation.end = t
        del self._live[conversation.id]
        if live.agent is not None and live.agent.user_id is not None:
            self._busy.discard(live.agent.user_id)

    def _conversation_note(self, topic: str, live: _Live, t: float) -> Notification:
        conversation = live.conversation
        ended = conversation.end is not None
        participants: list[dict[str, Any]] = [{
            "id": live.customer.id, "purpose": "customer",
            "state": "terminated" if ended else "connected",
            "connectedTime": iso_ms(conversation.start),
            "queue": {"id": conversation.queue_id},
        }]
        if live.agent is not None:
            segment = live.agent.sessions[0].segments[0]
            participants.append({
                "id": live.agent.id, "purpose": "agent", "userId": live.agent.user_id,
                "name": self.org.user_names.get(live.agent.user_id or "", ""),
                "state": "terminated" if ended else "connected",
                "connectedTime": iso_ms(segment.start),
                "queue": {"id": conversation.queue_id},
            })
        if ended:
            for p in participants:
                p["endTime"] = iso_ms(t)
        body = {"id": conversation.id, "participants": participants,
                "recordingState": "none", "address": self.org.queue_names[conversation.queue_id]}
        return Notification(self.org.client_id, topic, body)

    # -- users ----------------------------------------------------------------------------------
    def _presence(self, now: float) -> list[Notification]:
        user = self.rng.choice(self.org.users)
        records = self.store.user(user).presence
        value = self.rng.choice([p for p in PRESENCES if p != records[-1].value])
        t = self._ms(now, f"presence:{user}") / 1000
        records[-1].end = t
        presence_id = self.org.presence_ids[value]
        records.append(StatusRecord(t, value, presence_id=presence_id))
        body = {"source": "PURECLOUD", "primary": True, "message": "",
                "presenceDefinition": {"id": presence_id,
                                       "systemPresence": value.replace("_", " ").title()},
                "modifiedDate": iso_ms(t)}
        return [Notification(self.org.client_id, user_topic(user, "presence"), body)]

    def _routing(self, now: float) -> list[Notification]:
        user = self.rng.choice(self.org.users)
        records = self.store.user(user).routing
        value = self.rng.choice([r for r in ROUTING if r != records[-1].value])
        t = self._ms(now, f"routing:{user}") / 1000
        records[-1].end = t
        records.append(StatusRecord(t, value))
        body = {"routingStatus": {"userId": user, "status": value, "startTime": iso_ms(t)}}
        return [Notification(self.org.client_id, user_topic(user, "routingStatus"), body)]
