"""Cluster mode: one owned slot's lifecycle, and the decisions taken around it. Pure.

Every slot an instance holds moves through this table (``transition`` refuses anything else; a
unit test walks it)::

    UNOWNED -assigned-> ASSIGNED -> STARTING -ok-> RUNNING -revoked|shutdown|lease|fenced-> REVOKING
                           ^            |                                                       |
                           +-- failed --+ (backoff, retried while still assigned)               v
                           +----------------- assigned again --------------------------- STOPPED
    ASSIGNED | STOPPED -not assigned any more-> UNOWNED;  STARTING -revoked mid-start-> REVOKING

The orders of operations the driver (``connectors.cluster``) carries out:

* **STARTING:** start the slot's transactional producer (its InitProducerId fences the previous
  holder and completes or aborts that holder's open transaction), read the cursor topic
  ``read_committed`` up to its high watermark, build and start the slot's sources.
* **REVOKING:** stop the sources (close 1000), flush the shared producer, then, only when
  ``commits_on_release(reason)``, one final cursor transaction; stop the producer.

What happens after a cursor transaction is ``after_commit``: a fenced producer means another
instance took the slot (we are the zombie: stop, commit nothing); a timeout or another Kafka error
re-creates the producer, but only while the membership lease holds, since a new producer fences
whoever holds the slot's transactional id now.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class SlotState(enum.Enum):
    UNOWNED = "unowned"
    ASSIGNED = "assigned"     # in our assignment, not started yet (or waiting to retry)
    STARTING = "starting"     # fencing, reading cursors, starting sources
    RUNNING = "running"       # sources run, cursors commit in the slot's transactions
    REVOKING = "revoking"     # sources stopping, last cursors being written
    STOPPED = "stopped"       # nothing runs; the producer is closed


_S = SlotState
TRANSITIONS: dict[SlotState, frozenset[SlotState]] = {
    _S.UNOWNED: frozenset({_S.ASSIGNED}),
    _S.ASSIGNED: frozenset({_S.STARTING, _S.UNOWNED}),
    _S.STARTING: frozenset({_S.RUNNING, _S.ASSIGNED, _S.REVOKING}),
    _S.RUNNING: frozenset({_S.REVOKING}),
    _S.REVOKING: frozenset({_S.STOPPED}),
    _S.STOPPED: frozenset({_S.ASSIGNED, _S.UNOWNED}),
}
# the states in which the slot is ours to claim at the next rebalance
CLAIMABLE = frozenset({_S.ASSIGNED, _S.STARTING, _S.RUNNING})


class SlotTransitionError(ValueError):
    def __init__(self, slot: int, current: SlotState, new: SlotState) -> None:
        super().__init__(f"slot {slot} cannot go from {current.value} to {new.value}")
        self.slot = slot
        self.current = current
        self.new = new


def transition(slot: int, current: SlotState, new: SlotState) -> SlotState:
    """``new`` if the table allows ``current -> new`` (staying put is always allowed)."""
    if new is not current and new not in TRANSITIONS[current]:
        raise SlotTransitionError(slot, current, new)
    return new


class RevokeReason(enum.Enum):
    REVOKED = "revoked"            # not in our new assignment
    SHUTDOWN = "shutdown"          # SIGTERM / SIGINT
    LEASE = "lease"                # membership could not be confirmed in time
    FENCED = "fenced"              # another instance started the slot's producer: we are stale
    SLOT_COUNT = "slot_count_changed"  # the slot topic was repartitioned under the group


def commits_on_release(reason: RevokeReason) -> bool:
    """Whether a release writes a final cursor transaction.

    Only when our view is current: a fenced producer cannot commit, and after a lease expiry or
    a repartitioned slot topic another instance may already run the slot, so the next owner
    (perhaps us again) resumes from the last periodic commit: replays, never a loss.
    """
    return reason in (RevokeReason.REVOKED, RevokeReason.SHUTDOWN)


class CommitOutcome(enum.Enum):
    COMMITTED = "committed"
    NOTHING = "nothing"      # no cursor changed: no transaction
    FENCED = "fenced"
    TIMEOUT = "timeout"
    ERROR = "error"          # another Kafka error (the transaction state is unknown)


class Next(enum.Enum):
    KEEP = "keep"                      # go on with this producer
    RESET_PRODUCER = "reset_producer"  # drop it, start a new one (re-fences, resolves the txn)
    STOP_FENCED = "stop_fenced"        # stop the slot's streams, commit nothing


def after_commit(outcome: CommitOutcome, *, lease_valid: bool) -> Next:
    """What a slot does after a cursor transaction ended with ``outcome``."""
    if outcome is CommitOutcome.FENCED:
        return Next.STOP_FENCED
    if outcome in (CommitOutcome.TIMEOUT, CommitOutcome.ERROR):
        # a new producer fences the current holder of the tid: only while we are a member
        return Next.RESET_PRODUCER if lease_valid else Next.KEEP
    return Next.KEEP


@dataclass(frozen=True)
class RebalancePlan:
    """What a new assignment means for the slots an instance holds."""

    added: frozenset[int]     # to start
    removed: frozenset[int]   # to release (graceful)
    kept: frozenset[int]      # running on: one validation commit proves we still hold them


def plan(states: Mapping[int, SlotState], assigned: frozenset[int], *, lease_valid: bool = True,
         releasing: frozenset[int] = frozenset()) -> RebalancePlan:
    """Compare the slots we hold (``states``) with the new ``assigned`` ones.

    A slot is held only while the lease is valid and no release of it is under way: a member
    that was frozen past its session rejoins claiming nothing (``claims``), and an assignment
    that hands it back a slot it ran before the freeze is a fresh start of that slot, not a
    continuation, even while its stale sources are still being stopped (the release is queued
    behind the slot's lock). Such a slot is ``added``: it starts once its release is done.
    """
    held = frozenset(s for s, state in states.items()
                     if state in CLAIMABLE and s not in releasing) if lease_valid else frozenset()
    return RebalancePlan(added=assigned - held, removed=held - assigned,
                         kept=held & assigned)


def claims(states: Mapping[int, SlotState], *, lease_valid: bool) -> frozenset[int]:
    """The slots we claim when (re)joining: none once the lease expired (we rejoin empty)."""
    if not lease_valid:
        return frozenset()
    return frozenset(s for s, state in states.items() if state in CLAIMABLE)
