"""Genesys Cloud topics: templates, their expansion over the org's ids, packing into channels.
Pure: lists in, lists out (genesys-cloud contract §4).

* A template has at most one placeholder, ``{queue}`` (every routing-queue id) or ``{user}``
  (every user id), or none (used as written); any other brace is a configuration error.
* ``prefix?s1&s2`` is one *combined* id standing for ``prefix.s1`` and ``prefix.s2``: it is kept
  as written (the client neither combines nor splits ids) and counts once towards a channel's
  1,000 ids, but frames carry the single names, so coverage is about the single names.
* Every id is shorter than 200 characters (real), or start fails.
* L (expanded, deduplicated, in template order) is packed into C = ceil(|L| / 1000) channels of at
  most 1,000 ids; C > ``max_channels`` refuses start with the contract's exact line, and the
  streams of one ``(login host, client_id)`` together need at most 20 channels
  (``ChannelBudget``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PLACEHOLDERS = {"{queue}": "queue", "{user}": "user"}
MAX_ID_CHARS = 199          # "each id < 200 characters" (real)
CHANNEL_IDS = 1000          # ids per channel (real: a call leaving > 1,000 is answered 400)
CLIENT_CHANNELS = 20        # live channels per OAuth client (real)
USER_STATUS_EVENTS = ("presence", "routingStatus")  # the topics backfilled from users (§7)


class TopicError(ValueError):
    """A template or topic list start refuses; the message is the one line for stderr."""

    retriable = False


@dataclass(frozen=True)
class Template:
    text: str
    placeholder: str | None     # "queue" | "user" | None

    def expand(self, queues: Sequence[str], users: Sequence[str]) -> list[str]:
        token = next((t for t, kind in PLACEHOLDERS.items() if kind == self.placeholder), None)
        if token is None:
            return [self.text]
        ids = queues if self.placeholder == "queue" else users
        return [self.text.replace(token, entity) for entity in ids]


def parse_template(stream: str, index: int, text: str) -> Template:
    """One template of ``topics``; ``TopicError`` naming ``topics[index]`` if it is not one."""
    where = f"stream {stream}: topics[{index}] {text!r}"
    found = [(token, kind) for token, kind in PLACEHOLDERS.items() if token in text]
    total = sum(text.count(token) for token, _ in found)
    if total > 1:
        raise TopicError(f"{where}: at most one placeholder ({{queue}} or {{user}})")
    rest = text.replace(found[0][0], "") if found else text
    if "{" in rest or "}" in rest:
        raise TopicError(f"{where}: only {{queue}} or {{user}} may appear in braces")
    if not text.strip():
        raise TopicError(f"{where}: empty topic")
    prefix, combined, tail = text.partition("?")
    if combined and (not prefix or not all(tail.split("&"))):
        raise TopicError(f"{where}: a combined topic is prefix?s1&s2 with non-empty parts")
    return Template(text, found[0][1] if found else None)


def parse_templates(stream: str, texts: Sequence[str]) -> list[Template]:
    return [parse_template(stream, i, text) for i, text in enumerate(texts)]


def needs(templates: Iterable[Template]) -> set[str]:
    """Which id lists the templates need: a subset of {"queue", "user"}."""
    return {t.placeholder for t in templates if t.placeholder is not None}


def expand(stream: str, templates: Sequence[Template], queues: Sequence[str],
           users: Sequence[str]) -> list[str]:
    """L: every template expanded, deduplicated in order; ids of 200+ characters refused."""
    ids = list(dict.fromkeys(i for t in templates for i in t.expand(queues, users)))
    for topic in ids:
        if len(topic) > MAX_ID_CHARS:
            raise TopicError(f"stream {stream}: topic {topic[:60]!r}... is {len(topic)} "
                             f"characters; each id must be shorter than 200")
    if not ids:
        raise TopicError(f"stream {stream}: the topic templates expand to no topic")
    return ids


def singles(topic: str) -> list[str]:
    """The single names of an id: ``prefix?a&b`` is ``prefix.a`` and ``prefix.b`` (§4)."""
    prefix, combined, tail = topic.partition("?")
    if not combined:
        return [topic]
    return [f"{prefix}.{part}" for part in tail.split("&")]


def pack(stream: str, ids: Sequence[str], max_channels: int) -> list[tuple[str, ...]]:
    """C = ceil(|L| / 1000) channels of at most 1,000 ids each, in order (§4)."""
    count = math.ceil(len(ids) / CHANNEL_IDS)
    if count > max_channels:
        raise TopicError(f"stream {stream}: {len(ids)} topics need {count} channels, "
                         f"max_channels is {max_channels}")
    return [tuple(ids[i * CHANNEL_IDS:(i + 1) * CHANNEL_IDS]) for i in range(count)]


def is_user_status(name: str) -> bool:
    """``v2.users.<id>.presence`` / ``.routingStatus``: what the users query backfills."""
    parts = name.split(".")
    return len(parts) == 4 and parts[:2] == ["v2", "users"] and parts[3] in USER_STATUS_EVENTS


def backfill_kinds(ids: Iterable[str]) -> tuple[str, ...]:
    """§7: conversations if L holds a topic other than user presence/routingStatus; users if
    it holds one of those."""
    names = [n for topic in ids for n in singles(topic)]
    kinds = []
    if any(not is_user_status(n) for n in names):
        kinds.append("conversations")
    if any(is_user_status(n) for n in names):
        kinds.append("users")
    return tuple(kinds)


class ChannelBudget:
    """The channels the streams of one OAuth client need together (at most 20, §1 and §4)."""

    def __init__(self, limit: int = CLIENT_CHANNELS) -> None:
        self.limit = limit
        self.claims: dict[str, int] = {}

    def claim(self, stream: str, channels: int) -> int | None:
        """Claim ``channels`` for ``stream``; the total if it is over the limit (not claimed)."""
        total = sum(c for s, c in self.claims.items() if s != stream) + channels
        if total > self.limit:
            return total
        self.claims[stream] = channels
        return None

    def release(self, stream: str) -> None:
        self.claims.pop(stream, None)
