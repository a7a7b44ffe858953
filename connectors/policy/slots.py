"""Cluster mode: which slot a stream is in, and which member owns which slot. Pure.

A *slot* is a partition of the slot topic (``topics.slots``); a stream's slot is
``(murmur2(name) & 0x7fffffff) % P``, Kafka's default partitioner on the stream name, so it
depends only on the name and on ``P`` (the topic's partition count): members whose ``[[streams]]``
lists differ never disagree about a slot. The consumer group spreads the slots over the live
instances; the instance that is assigned a slot runs that slot's streams.

The leader of the group decides with ``assign``, from what each member said in its JoinGroup
metadata (``Claim``: the slots it runs, its configuration's fingerprint and stream weights):

1. **Sticky:** every slot a member claims stays with it. Two members claiming one slot (a zombie
   that has not learnt it was replaced) is settled for the smallest member id; fencing makes the
   loser harmless whichever it is.
2. **Unclaimed slots** (a member left or died): heaviest first, each to the least-loaded member by
   *stream* count (ties: fewer slots, then member id). Empty slots (no stream) go to the member
   with the fewest slots.
3. **Balance, with the fewest moves:** while the most- and the least-loaded members differ by more
   than the heaviest slot's weight, one slot moves from the first to the second, the one whose
   weight is nearest half the difference (each move strictly lowers the sum of squared loads, so
   this ends). Then empty slots are evened out to within one per member.

An input that is the previous output (every member claims what it was given) is already balanced
and sticky, so nothing moves without a membership change: that is what keeps the streams a member
keeps connected through an (eager) rebalance.

A member whose slot count differs from the topic's (the topic was repartitioned under a running
group: streams would map to other slots, hence to other transactional ids, which a fencing round
must cover first) gets nothing and the assignment carries ``error``: every member stops.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

CLAIM_VERSION = 1
SLOT_COUNT_CHANGED = "slot_count_changed"


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as aiokafka has it."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        k = int.from_bytes(data[i * 4:i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[length & ~3:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def slot_of(name: str, slots: int) -> int:
    """The slot of the stream ``name`` among ``slots`` (the sink's partitioner on the name)."""
    return (murmur2(name.encode()) & 0x7FFFFFFF) % slots


def transactional_id(group_id: str, slot: int) -> str:
    """The transactional id of ``slot``: whoever starts a producer with it fences the previous
    holder (the slot's cursors are committed in its transactions)."""
    return f"{group_id}.slot-{slot}"


def weights(names: Iterable[str], slots: int) -> dict[int, int]:
    """Streams per slot (slots without a stream are absent)."""
    return dict(Counter(slot_of(name, slots) for name in names))


def fingerprint(streams: Iterable[tuple[str, str]], slots: int) -> str:
    """What members compare to notice different configurations: (name, platform) pairs and P."""
    text = "\n".join(f"{name}\t{platform}" for name, platform in sorted(streams))
    return hashlib.sha256(f"{slots}\n{text}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Claim:
    """What one member says when it joins: who it is, what it runs, what its configuration is."""

    instance: str                       # its client id (unique per process)
    slots: int                          # the slot count it maps streams with
    fingerprint: str
    owned: frozenset[int] = frozenset()  # the slots it runs now (empty once its lease expired)
    weights: Mapping[int, int] = field(default_factory=dict)  # streams per slot, its config

    def encode(self) -> bytes:
        return orjson.dumps({
            "v": CLAIM_VERSION, "instance": self.instance, "slots": self.slots,
            "fp": self.fingerprint, "owned": sorted(self.owned),
            "w": {str(s): n for s, n in sorted(self.weights.items())},
        })

    @classmethod
    def decode(cls, raw: bytes | None) -> Claim | None:
        """A member's claim; None when it is not one (another version, another program)."""
        try:
            doc = orjson.loads(raw or b"")
            if not isinstance(doc, dict) or doc.get("v") != CLAIM_VERSION:
                return None
            return cls(str(doc["instance"]), int(doc["slots"]), str(doc["fp"]),
                       frozenset(int(s) for s in doc["owned"]),
                       {int(s): int(n) for s, n in dict(doc["w"]).items()})
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Assignment:
    """The leader's decision: member id -> slots, and what it noticed on the way."""

    owners: dict[str, frozenset[int]]
    error: str | None = None                 # SLOT_COUNT_CHANGED: every member stops
    mismatched: tuple[str, ...] = ()         # members whose fingerprint is not the majority's
    moved: frozenset[int] = frozenset()      # slots given to a member that did not claim them

    def note(self, member: str) -> dict[str, Any]:
        """The user data of one member's assignment (what the leader tells it)."""
        return {"v": CLAIM_VERSION, "error": self.error,
                "mismatched": member in self.mismatched, "members": len(self.owners)}


def _majority(claims: Mapping[str, Claim]) -> str | None:
    counted = Counter(c.fingerprint for c in claims.values())
    if not counted:
        return None
    return min(counted, key=lambda fp: (-counted[fp], fp))


def assign(members: Mapping[str, Claim | None], slots: int) -> Assignment:
    """Slots of a topic of ``slots`` partitions over ``members`` (member id -> its claim)."""
    if not members:
        return Assignment({})
    claims = {m: c for m, c in members.items() if c is not None}
    if any(c.slots != slots for c in claims.values()):
        return Assignment({m: frozenset() for m in members}, error=SLOT_COUNT_CHANGED)
    majority = _majority(claims)
    mismatched = tuple(sorted(m for m, c in claims.items() if c.fingerprint != majority))
    weight: dict[int, int] = {}
    for claim in claims.values():
        for slot, n in claim.weights.items():
            if 0 <= slot < slots:
                weight[slot] = max(weight.get(slot, 0), n)
    owned: dict[str, set[int]] = {m: set() for m in sorted(members)}
    taken: set[int] = set()
    for member, held in owned.items():  # sorted: a slot claimed twice goes to the smallest id
        claimed = claims.get(member)
        for slot in sorted(claimed.owned if claimed else ()):
            if 0 <= slot < slots and slot not in taken:
                held.add(slot)
                taken.add(slot)
    kept = {slot: m for m, held in owned.items() for slot in held}
    _place(owned, weight, [s for s in range(slots) if s not in taken])
    _balance(owned, weight)
    _even_empty(owned, weight)
    moved = frozenset(s for m, held in owned.items() for s in held if kept.get(s) != m)
    return Assignment({m: frozenset(held) for m, held in owned.items()}, None, mismatched,
                      moved)


def _load(held: set[int], weight: Mapping[int, int]) -> int:
    return sum(weight.get(s, 0) for s in held)


def _place(owned: dict[str, set[int]], weight: Mapping[int, int], free: list[int]) -> None:
    """Unclaimed slots, heaviest first, to the least-loaded member (stream count)."""
    for slot in sorted(free, key=lambda s: (-weight.get(s, 0), s)):
        if weight.get(slot, 0):
            target = min(owned, key=lambda m: (_load(owned[m], weight), len(owned[m]), m))
        else:
            target = min(owned, key=lambda m: (len(owned[m]), m))
        owned[target].add(slot)


def _balance(owned: dict[str, set[int]], weight: Mapping[int, int]) -> None:
    """Move slots from the most- to the least-loaded member until within one slot's weight."""
    heaviest = max(weight.values(), default=0)
    while True:
        loads = {m: _load(held, weight) for m, held in owned.items()}
        high = max(owned, key=lambda m: (loads[m], m))
        low = min(owned, key=lambda m: (loads[m], m))
        gap = loads[high] - loads[low]
        if gap <= heaviest:
            return
        movable = [s for s in owned[high] if 0 < weight.get(s, 0) < gap]
        if not movable:  # cannot happen (every weight is <= heaviest < gap), kept for safety
            return
        slot = min(movable, key=lambda s: (abs(gap - 2 * weight[s]), s))
        owned[high].discard(slot)
        owned[low].add(slot)


def _even_empty(owned: dict[str, set[int]], weight: Mapping[int, int]) -> None:
    """Empty slots cost nothing to run; spread them to within one per member."""
    while True:
        empty = {m: sorted(s for s in held if not weight.get(s, 0)) for m, held in owned.items()}
        high = max(owned, key=lambda m: (len(empty[m]), m))
        low = min(owned, key=lambda m: (len(empty[m]), m))
        if len(empty[high]) - len(empty[low]) <= 1:
            return
        slot = empty[high][-1]
        owned[high].discard(slot)
        owned[low].add(slot)


def loads(owners: Mapping[str, Iterable[int]], weight: Mapping[int, int]) -> dict[str, int]:
    """Streams per member of an assignment (for logs, ``ccstream owners`` and tests)."""
    return {m: sum(weight.get(s, 0) for s in held) for m, held in owners.items()}
