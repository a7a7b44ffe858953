"""A tenant's Real-Time Data, pure: agents, contacts and skills changing, every row version with
the interval it was current, and the ``updatedSince`` selection (contract s.3).

No clock and no randomness of its own: every call takes ``now_ms`` (the server clock, epoch ms)
and the constructor a seeded random source. Decisions, served exactly:

- A row's every change is a new *version* whose ``lastUpdateTime`` is the server's now, bumped
  by 1 ms if needed so that it is strictly increasing per row. A version is current from that
  time until the next version of the row (or, for a contact, its end) replaces it.
- Skill rows are derived counters; a skill changes (internally timed, no time field on the
  wire) whenever one of its counters moves.
- ``updatedSince=u`` is inclusive: every current row with ``lastUpdateTime >= u``, each only
  in its current state. Nothing changed -> 304. ``u`` older than retention -> the full current
  snapshot, truncated. No ``u`` at all -> the full snapshot (not truncated).
- A contact that ends leaves ``contacts/active`` silently and is added to ``completed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.cxone.completed import CompletedStore
from simulator.cxone.values import (
    AGENTS,
    CONTACTS,
    POLL_ENDPOINTS,
    SKILLS,
    Rng,
    digest,
    iso_ms,
)

STATE_IDS = {"LoggedOut": 0, "Available": 1, "Unavailable": 2, "InboundContact": 3, "ACW": 7}
CONTACT_STATES = {"Queued": 1, "Active": 4, "Holding": 5}
MEDIA = (("Call", 4), ("Chat", 3), ("Email", 1))
_FIRST = ("Ada", "Bo", "Cyd", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kit", "Lu")
ACTIONS = ("start", "assign", "hold", "end", "abandon", "wrap", "away", "logout", "login")


@dataclass
class Version:
    endpoint: str
    key: str
    row: dict[str, Any]
    updated_ms: int
    current_to_ms: int | None = None
    digest: str = ""
    answered: int = 0    # answers (200) that carried this version

    @property
    def current_from_ms(self) -> int:
        return self.updated_ms

    def to_json(self, with_row: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "endpoint": self.endpoint, "key": self.key,
            "lastUpdateTime": iso_ms(self.updated_ms),
            "current_from": iso_ms(self.updated_ms),
            "current_to": None if self.current_to_ms is None else iso_ms(self.current_to_ms),
            "sha256": self.digest, "answered": self.answered,
        }
        if with_row:
            out["row"] = self.row
        return out


@dataclass
class _Agent:
    agent_id: int
    team_id: int
    skills: tuple[int, ...]
    first: str
    state: str = "Available"
    contact: int | None = None
    skill: int | None = None
    since_ms: int = 0


@dataclass
class _Contact:
    contact_id: int
    skill: int
    start_ms: int
    from_addr: str
    state: str = "Queued"
    agent: int | None = None


@dataclass(frozen=True)
class PollAnswer:
    status: int                        # 200 or 304
    versions: tuple[Version, ...]
    truncated: bool = False
    repeated: int = 0


class TenantModel:
    """One tenant's agents, contacts and skills; ``step`` applies one change."""

    def __init__(self, name: str, agents: int, skills: int, rng: Rng, *, now_ms: int,
                 lag_ms: int) -> None:
        self.name = name
        self.current: dict[str, dict[str, Version]] = {e: {} for e in POLL_ENDPOINTS}
        self.history: list[Version] = []
        self.completed = CompletedStore()
        self.changes = 0
        self._rng = rng
        self._lag_ms = lag_ms
        self._last_ms: dict[tuple[str, str], int] = {}
        self._skills = skills
        self._contacts: dict[int, _Contact] = {}
        self._next_contact = 100_000_000 + 1000 * rng.randint(1, 899)
        self._agents = [
            _Agent(1001 + i, 3001 + i // 4, tuple(sorted({i % skills, (i + 1) % skills}))
                   if i % 2 == 0 else (i % skills,), _FIRST[i % len(_FIRST)])
            for i in range(agents)
        ]
        for index, agent in enumerate(self._agents):
            draw = rng.random()
            state = "Available" if draw < 0.7 else "Unavailable" if draw < 0.85 else "LoggedOut"
            self._set_agent(index, state, now_ms, contact=agent.contact)
        self._refresh_skills(now_ms)

    # -- versions ----------------------------------------------------------------------------
    def _bump(self, endpoint: str, key: str, now_ms: int) -> int:
        t = max(now_ms, self._last_ms.get((endpoint, key), now_ms - 1) + 1)
        self._last_ms[endpoint, key] = t
        return t

    def _store(self, endpoint: str, key: str, row: dict[str, Any], t: int) -> None:
        old = self.current[endpoint].get(key)
        if old is not None:
            old.current_to_ms = t
        version = Version(endpoint, key, row, t, digest=digest(row))
        self.current[endpoint][key] = version
        self.history.append(version)

    def _remove(self, endpoint: str, key: str, now_ms: int) -> int:
        t = self._bump(endpoint, key, now_ms)
        self.current[endpoint].pop(key).current_to_ms = t
        return t

    # -- rows --------------------------------------------------------------------------------
    def _skill_ref(self, skill: int | None) -> tuple[int | None, str | None]:
        if skill is None:
            return None, None
        return 4001 + skill, f"{MEDIA[skill % 3][0]} Skill {skill + 1}"

    def _set_agent(self, index: int, state: str, now_ms: int, contact: int | None = None,
                   skill: int | None = None) -> None:
        agent = self._agents[index]
        agent.state, agent.contact, agent.skill = state, contact, skill
        t = self._bump(AGENTS, str(agent.agent_id), now_ms)
        agent.since_ms = t
        skill_id, skill_name = self._skill_ref(skill)
        self._store(AGENTS, str(agent.agent_id), {
            "agentId": agent.agent_id, "agentStateId": STATE_IDS[state], "agentStateName": state,
            "contactId": contact, "skillId": skill_id, "skillName": skill_name,
            "teamId": agent.team_id, "teamName": f"Team {agent.team_id - 3000}",
            "firstName": agent.first, "lastName": f"Agent{agent.agent_id}",
            "isOutbound": False, "isACW": state == "ACW",
            "startDate": iso_ms(t), "lastUpdateTime": iso_ms(t),
        }, t)

    def _contact_base(self, c: _Contact) -> dict[str, Any]:
        skill_id, skill_name = self._skill_ref(c.skill)
        media, media_id = MEDIA[c.skill % 3]
        agent = None if c.agent is None else self._agents[c.agent]
        return {
            "contactId": c.contact_id, "masterContactId": c.contact_id,
            "mediaTypeId": media_id, "mediaTypeName": media, "skillId": skill_id,
            "skillName": skill_name, "agentId": None if agent is None else agent.agent_id,
            "teamId": None if agent is None else agent.team_id, "isOutbound": False,
            "fromAddr": c.from_addr, "toAddr": f"skill-{skill_id}@acd",
            "campaignId": 1, "campaignName": "Inbound",
        }

    def _put_contact(self, c: _Contact, now_ms: int) -> None:
        t = self._bump(CONTACTS, str(c.contact_id), now_ms)
        row = self._contact_base(c)
        row.update({"state": c.state, "stateId": CONTACT_STATES[c.state],
                    "contactStartDate": iso_ms(c.start_ms), "lastUpdateTime": iso_ms(t)})
        self._store(CONTACTS, str(c.contact_id), row, t)

    def _complete(self, c: _Contact, now_ms: int, abandoned: bool) -> None:
        t = self._remove(CONTACTS, str(c.contact_id), now_ms)
        del self._contacts[c.contact_id]
        row = self._contact_base(c)
        row.update({"contactStart": iso_ms(c.start_ms), "lastUpdateTime": iso_ms(t),
                    "abandoned": abandoned, "totalDurationSeconds": (t - c.start_ms) / 1000,
                    "endReason": "Abandoned" if abandoned else "Contact Hung Up"})
        lag = round(self._rng.uniform(0.0, float(self._lag_ms)))
        self.completed.add(str(c.contact_id), row, t, t + lag)

    def _refresh_skills(self, now_ms: int) -> None:
        for skill in range(self._skills):
            members = [a for a in self._agents if skill in a.skills]
            contacts = [c for c in self._contacts.values() if c.skill == skill]
            skill_id, skill_name = self._skill_ref(skill)
            media, media_id = MEDIA[skill % 3]
            row = {
                "skillId": skill_id, "skillName": skill_name, "mediaTypeId": media_id,
                "mediaTypeName": media, "isOutbound": False, "campaignId": 1,
                "campaignName": "Inbound",
                "agentsLoggedIn": sum(a.state != "LoggedOut" for a in members),
                "agentsAvailable": sum(a.state == "Available" for a in members),
                "agentsUnavailable": sum(a.state == "Unavailable" for a in members),
                "agentsWorking": sum(a.state == "InboundContact" for a in members),
                "agentsACW": sum(a.state == "ACW" for a in members),
                "contactsActive": sum(c.state != "Queued" for c in contacts),
                "contactsQueued": sum(c.state == "Queued" for c in contacts),
            }
            old = self.current[SKILLS].get(str(skill_id))
            if old is None or old.row != row:
                self._store(SKILLS, str(skill_id), row, self._bump(SKILLS, str(skill_id), now_ms))

    # -- changes -----------------------------------------------------------------------------
    def _free_agent(self, skill: int) -> int | None:
        free = [i for i, a in enumerate(self._agents) if a.state == "Available"
                and skill in a.skills]
        return self._rng.choice(free) if free else None

    def _in(self, *states: str) -> list[int]:
        return [i for i, a in enumerate(self._agents) if a.state in states]

    def _options(self) -> dict[str, float]:
        contacts = list(self._contacts.values())
        queued = [c for c in contacts if c.state == "Queued"]
        opts: dict[str, float] = {}
        if len(contacts) < 2 * len(self._agents):
            opts["start"] = 3.0
        if any(self._free_agent_exists(c.skill) for c in queued):
            opts["assign"] = 4.0
        if any(c.state != "Queued" for c in contacts):
            opts["end"], opts["hold"] = 3.0, 1.0
        if queued:
            opts["abandon"] = 0.3
        if self._in("ACW"):
            opts["wrap"] = 3.0
        if self._in("Available", "Unavailable"):
            opts["away"], opts["logout"] = 1.5, 0.2
        if self._in("LoggedOut"):
            opts["login"] = 0.6
        return opts

    def _free_agent_exists(self, skill: int) -> bool:
        return any(a.state == "Available" and skill in a.skills for a in self._agents)

    def _connect(self, c: _Contact, agent: int, now_ms: int) -> None:
        c.state, c.agent = "Active", agent
        self._put_contact(c, now_ms)
        self._set_agent(agent, "InboundContact", now_ms, c.contact_id, c.skill)

    def _do(self, action: str, now_ms: int) -> None:
        rng = self._rng
        connected = [c for c in self._contacts.values() if c.state != "Queued"]
        queued = [c for c in self._contacts.values() if c.state == "Queued"]
        if action == "start":
            self._next_contact += 1
            c = _Contact(self._next_contact, rng.randint(0, self._skills - 1), now_ms,
                         f"+1555{rng.randint(0, 9_999_999):07d}")
            self._contacts[c.contact_id] = c
            agent = self._free_agent(c.skill)
            if agent is None:
                self._put_contact(c, now_ms)
            else:
                self._connect(c, agent, now_ms)
        elif action == "assign":
            c = next(c for c in queued if self._free_agent_exists(c.skill))
            agent = self._free_agent(c.skill)
            assert agent is not None
            self._connect(c, agent, now_ms)
        elif action == "hold":
            c = rng.choice(connected)
            c.state = "Holding" if c.state == "Active" else "Active"
            self._put_contact(c, now_ms)
        elif action == "end":
            c = rng.choice(connected)
            assert c.agent is not None
            self._complete(c, now_ms, abandoned=False)
            self._set_agent(c.agent, "ACW", now_ms, c.contact_id, c.skill)
        elif action == "abandon":
            self._complete(rng.choice(queued), now_ms, abandoned=True)
        elif action == "wrap":
            self._set_agent(rng.choice(self._in("ACW")), "Available", now_ms)
        elif action == "away":
            index = rng.choice(self._in("Available", "Unavailable"))
            flip = "Unavailable" if self._agents[index].state == "Available" else "Available"
            self._set_agent(index, flip, now_ms)
        elif action == "logout":
            self._set_agent(rng.choice(self._in("Available", "Unavailable")), "LoggedOut", now_ms)
        elif action == "login":
            self._set_agent(rng.choice(self._in("LoggedOut")), "Available", now_ms)

    def step(self, now_ms: int, action: str | None = None) -> str | None:
        """Apply one change (``action``, or one drawn by weight); None if none applies."""
        opts = self._options()
        if action is None:
            if not opts:
                return None
            draw = self._rng.random() * sum(opts.values())
            for name, weight in opts.items():
                action = name
                draw -= weight
                if draw < 0:
                    break
        elif action not in ACTIONS:
            raise ValueError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
        if action not in opts:
            return None
        assert action is not None
        self._do(action, now_ms)
        self._refresh_skills(now_ms)
        self.changes += 1
        return action

    def collapse(self, now_ms: int, rows: int, transitions: int) -> int:
        """``rows`` agents each go through ``transitions`` states at once (the collapse fault):
        only the last is served to a poller; the versions between are current for ~0 s."""
        before = len(self.history)
        agents = self._in("Available", "Unavailable")
        start = self._rng.randint(0, max(0, len(agents) - 1))
        for index in (agents[start:] + agents[:start])[:rows]:
            for _ in range(transitions):
                flip = "Unavailable" if self._agents[index].state == "Available" else "Available"
                self._set_agent(index, flip, now_ms)
                self._refresh_skills(now_ms)
        if not agents:  # everyone busy: contacts flip between Active and Holding instead
            for c in [c for c in self._contacts.values() if c.state != "Queued"][:rows]:
                for _ in range(transitions):
                    c.state = "Holding" if c.state == "Active" else "Active"
                    self._put_contact(c, now_ms)
                    self._refresh_skills(now_ms)
        self.changes += 1
        return len(self.history) - before

    # -- selection ---------------------------------------------------------------------------
    def snapshot(self, endpoint: str) -> list[Version]:
        return sorted(self.current[endpoint].values(), key=lambda v: (v.updated_ms, v.key))

    def answer(self, endpoint: str, since_ms: int | None, *, now_ms: int, retention_ms: int,
               truncate: bool = False, repeat: int = 0) -> PollAnswer:
        """The answer to ``updatedSince=since_ms`` now (contract s.3, server rules)."""
        rows = self.snapshot(endpoint)
        if since_ms is None:
            return PollAnswer(200, tuple(rows))
        if truncate or since_ms < now_ms - retention_ms:
            return PollAnswer(200, tuple(rows), truncated=True)
        changed = [v for v in rows if v.updated_ms >= since_ms]
        # repeat_rows: the newest rows the client already has, sent again unchanged
        extra = [v for v in rows if v.updated_ms < since_ms][-repeat:] if repeat > 0 else []
        if not changed and not extra:
            return PollAnswer(304, ())
        return PollAnswer(200, (*extra, *changed), repeated=len(extra))

    def counts(self) -> dict[str, int]:
        return {"agents": len(self._agents), "active_contacts": len(self._contacts),
                "versions": len(self.history), "completed": len(self.completed.entries),
                "changes": self.changes}

