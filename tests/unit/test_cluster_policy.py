"""Pure tests of cluster mode's decisions: stream -> slot hashing, the sticky weighted assignor
(property tests), the slot state machine and its decisions, the membership lease, the owners
timeline of the simulator (no I/O, milliseconds)."""

from __future__ import annotations

import itertools

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.cluster.group import GroupView, MemberView
from connectors.policy import slot_states
from connectors.policy.lease import TRANSITIONS as LEASE_TRANSITIONS
from connectors.policy.lease import Lease, LeaseState
from connectors.policy.slot_states import (
    TRANSITIONS,
    CommitOutcome,
    Next,
    RevokeReason,
    SlotState,
    SlotTransitionError,
    after_commit,
    commits_on_release,
    transition,
)
from connectors.policy.slots import (
    SLOT_COUNT_CHANGED,
    Claim,
    assign,
    fingerprint,
    loads,
    murmur2,
    slot_of,
    weights,
)
from simulator.ledger import OwnersTimeline


# -- hashing -------------------------------------------------------------------------------------
@given(st.binary(max_size=64))
def test_murmur2_is_kafkas(data: bytes) -> None:
    """The pure murmur2 is the one aiokafka (and Kafka's Java client) partitions with."""
    assert murmur2(data) == aiokafka_murmur2(data)


def test_a_streams_slot_depends_on_its_name_and_the_slot_count_only() -> None:
    """slot_of is the default partitioner on the name; weights count streams per slot."""
    assert slot_of("genesys-1", 16) == (aiokafka_murmur2(b"genesys-1") & 0x7FFFFFFF) % 16
    names = [f"s-{i}" for i in range(40)]
    assert sum(weights(names, 16).values()) == 40
    assert fingerprint([("a", "nice"), ("b", "genesys")], 16) == \
        fingerprint([("b", "genesys"), ("a", "nice")], 16)
    assert fingerprint([("a", "nice")], 16) != fingerprint([("a", "nice")], 32)


def test_a_claim_round_trips_and_foreign_metadata_is_no_claim() -> None:
    """A claim encodes to JSON and back; other programs' user data decode to None."""
    claim = Claim("i-1", 16, "fp", frozenset({3, 1}), {1: 2, 3: 1})
    assert Claim.decode(claim.encode()) == claim
    assert Claim.decode(b"") is None
    assert Claim.decode(b"\x00\x01") is None
    assert Claim.decode(b'{"v": 99}') is None


# -- the assignor --------------------------------------------------------------------------------
SLOTS = 16


def _claims(members: dict[str, frozenset[int]], weight: dict[int, int],
            slots: int = SLOTS) -> dict[str, Claim | None]:
    return {m: Claim(f"inst-{m}", slots, "fp", owned, weight) for m, owned in members.items()}


def _check_exactly_once(owners: dict[str, frozenset[int]], slots: int = SLOTS) -> None:
    every = [s for held in owners.values() for s in held]
    assert sorted(every) == list(range(slots))


def _balanced(owners: dict[str, frozenset[int]], weight: dict[int, int]) -> bool:
    load = loads(owners, weight)
    return max(load.values()) - min(load.values()) <= max(weight.values(), default=0)


weights_st = st.dictionaries(st.integers(0, SLOTS - 1), st.integers(1, 4), max_size=SLOTS)
members_st = st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=6,
                      unique=True)


@settings(max_examples=200, deadline=None)
@given(members_st, weights_st, st.data())
def test_every_slot_is_assigned_exactly_once_and_balanced(
        members: list[str], weight: dict[int, int], data: st.DataObject) -> None:
    """Whatever the claims (even overlapping ones), each slot has exactly one owner and loads
    differ by at most the heaviest slot's weight."""
    claimed = {m: frozenset(data.draw(st.sets(st.integers(0, SLOTS - 1)))) for m in members}
    decision = assign(_claims(claimed, weight), SLOTS)
    assert decision.error is None
    _check_exactly_once(decision.owners)
    assert _balanced(decision.owners, weight)


@settings(max_examples=200, deadline=None)
@given(members_st, weights_st)
def test_nothing_moves_without_a_membership_change(members: list[str],
                                                   weight: dict[int, int]) -> None:
    """Claiming exactly what was given yields exactly the same assignment (sticky)."""
    first = assign(_claims({m: frozenset() for m in members}, weight), SLOTS).owners
    again = assign(_claims(first, weight), SLOTS)
    assert again.owners == first
    assert again.moved == frozenset()


@settings(max_examples=150, deadline=None)
@given(members_st, weights_st, st.text("xyz", min_size=1, max_size=2))
def test_a_join_moves_only_what_balance_needs(members: list[str], weight: dict[int, int],
                                              newcomer: str) -> None:
    """A new member takes slots only from the others; every slot it did not get stays put."""
    newcomer = "z" + newcomer  # not among the members
    before = assign(_claims({m: frozenset() for m in members}, weight), SLOTS).owners
    after = assign(_claims({**before, newcomer: frozenset()}, weight), SLOTS)
    _check_exactly_once(after.owners)
    for member, held in before.items():
        assert after.owners[member] <= held  # nobody gains, nothing moves between old members
    assert after.moved == after.owners[newcomer]
    assert _balanced(after.owners, weight)


@settings(max_examples=150, deadline=None)
@given(members_st, weights_st, st.data())
def test_a_departure_moves_only_the_departed_members_slots(
        members: list[str], weight: dict[int, int], data: st.DataObject) -> None:
    """When a member dies its slots are spread; survivors keep what they had but for at most
    two balancing moves (the departed slots are placed heaviest first on the least loaded)."""
    members = [*members, "zz"]
    before = assign(_claims({m: frozenset() for m in members}, weight), SLOTS).owners
    gone = data.draw(st.sampled_from(members))
    survivors = {m: held for m, held in before.items() if m != gone}
    after = assign(_claims(survivors, weight), SLOTS)
    _check_exactly_once(after.owners)
    assert _balanced(after.owners, weight)
    lost = sum(len(held - after.owners[m]) for m, held in survivors.items())
    assert lost <= 2
    assert before[gone] <= after.moved


def test_a_slot_claimed_twice_goes_to_the_smallest_member_id() -> None:
    """Conflicting claims (a zombie that has not learnt it was replaced): the smallest id wins,
    which is safe because fencing stops the other."""
    weight = {0: 1, 1: 1, 2: 1, 3: 1}
    decision = assign(_claims({"b": frozenset({0, 1}), "a": frozenset({1, 2})}, weight, 4), 4)
    assert 1 in decision.owners["a"]
    assert 1 not in decision.owners["b"]
    _check_exactly_once(decision.owners, 4)


def test_no_members_no_assignment_and_claimless_members_get_everything() -> None:
    """An empty group assigns nothing; members with no (or foreign) claims share every slot."""
    assert assign({}, SLOTS).owners == {}
    decision = assign({"a": None, "b": None}, 4)
    _check_exactly_once(decision.owners, 4)
    assert {len(h) for h in decision.owners.values()} == {2}


def test_a_repartitioned_slot_topic_assigns_nothing_and_says_why() -> None:
    """A member mapping streams over another slot count: nobody gets anything, error set."""
    claims = _claims({"a": frozenset({0})}, {0: 1}, slots=8)
    decision = assign(claims, 16)
    assert decision.error == SLOT_COUNT_CHANGED
    assert decision.owners == {"a": frozenset()}
    assert decision.note("a")["error"] == SLOT_COUNT_CHANGED


def test_a_different_configuration_is_reported_but_still_assigned() -> None:
    """Fingerprint mismatch (a rolling change): logged and counted, the member still works."""
    claims: dict[str, Claim | None] = {
        "a": Claim("ia", 4, "fp1", frozenset(), {0: 1}),
        "b": Claim("ib", 4, "fp1", frozenset(), {1: 1}),
        "c": Claim("ic", 4, "fp2", frozenset(), {2: 1}),
    }
    decision = assign(claims, 4)
    assert decision.mismatched == ("c",)
    _check_exactly_once(decision.owners, 4)
    assert decision.note("c")["mismatched"] is True


def test_unclaimed_slots_go_heaviest_first_to_the_least_loaded() -> None:
    """Stream weight, not slot count, is what is balanced."""
    weight = {0: 5, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    decision = assign(_claims({"a": frozenset(), "b": frozenset()}, weight, 6), 6)
    load = loads(decision.owners, weight)
    assert sorted(load.values()) == [5, 5]


# -- the slot state machine ------------------------------------------------------------------------
def test_the_slot_transition_table_is_walked() -> None:
    """Every listed transition is allowed, every other is refused, staying put is allowed."""
    for current, new in itertools.product(SlotState, SlotState):
        if new is current or new in TRANSITIONS[current]:
            assert transition(7, current, new) is new
        else:
            with pytest.raises(SlotTransitionError):
                transition(7, current, new)


def test_the_documented_life_of_a_slot_is_in_the_table() -> None:
    """assigned -> starting -> running -> revoking -> stopped, and back when assigned again."""
    path = [SlotState.UNOWNED, SlotState.ASSIGNED, SlotState.STARTING, SlotState.RUNNING,
            SlotState.REVOKING, SlotState.STOPPED, SlotState.ASSIGNED, SlotState.STARTING,
            SlotState.ASSIGNED, SlotState.UNOWNED]
    state = path[0]
    for new in path[1:]:
        state = transition(1, state, new)
    assert state is SlotState.UNOWNED
    # every state is reachable from UNOWNED
    seen, todo = {SlotState.UNOWNED}, [SlotState.UNOWNED]
    while todo:
        for new in TRANSITIONS[todo.pop()] - seen:
            seen.add(new)
            todo.append(new)
    assert seen == set(SlotState)


def test_only_a_current_view_commits_on_release() -> None:
    """Final cursors on revoke and shutdown; none when fenced, after a lease expiry or a
    repartitioned slot topic."""
    assert {r for r in RevokeReason if commits_on_release(r)} == {
        RevokeReason.REVOKED, RevokeReason.SHUTDOWN}


def test_what_follows_a_cursor_transaction() -> None:
    """Fenced: stop without committing; timeout/error: a new producer only while the lease
    holds (a new producer fences whoever holds the id); success: go on."""
    assert after_commit(CommitOutcome.FENCED, lease_valid=True) is Next.STOP_FENCED
    assert after_commit(CommitOutcome.FENCED, lease_valid=False) is Next.STOP_FENCED
    for failed in (CommitOutcome.TIMEOUT, CommitOutcome.ERROR):
        assert after_commit(failed, lease_valid=True) is Next.RESET_PRODUCER
        assert after_commit(failed, lease_valid=False) is Next.KEEP
    for fine in (CommitOutcome.COMMITTED, CommitOutcome.NOTHING):
        assert after_commit(fine, lease_valid=True) is Next.KEEP


def test_a_new_assignment_is_planned_against_what_runs() -> None:
    """Added, removed and kept slots; a stopped slot assigned again is added."""
    states = {0: SlotState.RUNNING, 1: SlotState.RUNNING, 2: SlotState.STOPPED,
              3: SlotState.STARTING, 4: SlotState.UNOWNED}
    plan = slot_states.plan(states, frozenset({1, 2, 3, 5}))
    assert plan.kept == {1, 3}
    assert plan.removed == {0}
    assert plan.added == {2, 5}


def test_a_slot_handed_back_after_the_lease_expired_is_a_fresh_start() -> None:
    """A member frozen past its session (SIGSTOP) that is handed back a slot it ran before holds
    nothing: no slot is kept while the lease is invalid or while the slot's release is queued."""
    states = {0: SlotState.RUNNING, 1: SlotState.RUNNING, 2: SlotState.STOPPED}
    expired = slot_states.plan(states, frozenset({0, 2}), lease_valid=False)
    assert expired.kept == frozenset() and expired.removed == frozenset()
    assert expired.added == {0, 2}
    releasing = slot_states.plan(states, frozenset({0, 1}), releasing=frozenset({0}))
    assert releasing.kept == {1} and releasing.added == {0}


def test_a_member_whose_lease_expired_rejoins_empty() -> None:
    """Claims are what runs or starts, and nothing once the lease is gone."""
    states = {0: SlotState.RUNNING, 1: SlotState.STARTING, 2: SlotState.REVOKING,
              3: SlotState.STOPPED, 4: SlotState.ASSIGNED}
    assert slot_states.claims(states, lease_valid=True) == {0, 1, 4}
    assert slot_states.claims(states, lease_valid=False) == frozenset()


# -- the lease -------------------------------------------------------------------------------------
def test_the_lease_runs_from_when_the_request_was_sent() -> None:
    """Renewed at send time; valid strictly before its end; each change reported once."""
    lease = Lease(2.0)
    assert not lease.valid(0.0)
    assert lease.renew(sent_at=10.0, now=10.3) is LeaseState.HELD
    assert lease.valid(11.99) and not lease.valid(12.0)
    assert lease.renew(sent_at=10.5, now=10.8) is None  # already held
    assert lease.observe(12.4) is None
    assert lease.observe(12.6) is LeaseState.EXPIRED
    assert lease.observe(13.0) is None
    assert lease.expiries == 1
    assert lease.renew(sent_at=13.0, now=13.1) is LeaseState.HELD


def test_after_sigcont_the_lease_is_already_expired() -> None:
    """A process paused past its lease finds it expired at the first check, whatever the
    renewals answered before the pause."""
    lease = Lease(1.2)
    lease.renew(100.0, 100.01)
    assert not lease.valid(100.0 + 6.0)
    assert lease.observe(106.0) is LeaseState.EXPIRED


def test_an_answer_older_than_a_known_loss_does_not_renew() -> None:
    """After lose(), only a request sent later renews the lease."""
    lease = Lease(2.0)
    lease.renew(0.0, 0.1)
    assert lease.lose(1.0) is LeaseState.EXPIRED
    assert lease.renew(sent_at=0.9, now=1.1) is None
    assert not lease.valid(1.1)
    assert lease.renew(sent_at=1.2, now=1.3) is LeaseState.HELD


def test_the_lease_transition_table() -> None:
    """NONE -> HELD <-> EXPIRED, nothing else."""
    assert LEASE_TRANSITIONS[LeaseState.NONE] == {LeaseState.HELD}
    assert LEASE_TRANSITIONS[LeaseState.HELD] == {LeaseState.EXPIRED}
    assert LEASE_TRANSITIONS[LeaseState.EXPIRED] == {LeaseState.HELD}
    with pytest.raises(ValueError):
        Lease(0.0)


# -- the simulator's owners timeline ------------------------------------------------------------
def test_the_owners_timeline_measures_gaps_and_overlaps() -> None:
    """Open counts per stream, and within a window the longest time with no connection and
    with more than one."""
    timeline = OwnersTimeline()
    timeline.opened(0.0, 0.0, "genesys/a", 1)
    timeline.closed(5.0, 5.0, "genesys/a", 1)       # 5.0 -> 7.5 nobody
    timeline.opened(7.5, 7.5, "genesys/a", 2)
    timeline.opened(9.0, 9.0, "genesys/a", 3)       # 9.0 -> 9.4 two
    timeline.closed(9.4, 9.4, "genesys/a", 2)
    assert timeline.open_now("genesys/a") == 1
    assert timeline.spans("genesys/a", 1.0, 12.0) == pytest.approx((2.5, 0.4))
    assert timeline.opened_since("genesys/a", 7.0) == 2
    doc = timeline.to_json("genesys/a")
    assert doc["open"] == {"genesys/a": 1}
    assert [e["delta"] for e in doc["events"]] == [1, -1, 1, 1, -1]


def test_a_replaced_static_member_is_known_by_its_claim_not_the_client_id_kafka_kept() -> None:
    """Kafka keeps the replaced process's client id on a static member and stores the new
    join's metadata: the new process is listed (its lease renews), the old one is not (a zombie
    must lose its lease)."""
    new = Claim("ccstream-b-200-bbbbbb", 16, "fp")
    view = GroupView("g", "Stable", "ccstream-slots", (
        MemberView("static-b-2", "ccstream-b-100-aaaaaa", "/127.0.0.1", new, frozenset({1})),
        MemberView("m-a", "ccstream-a-300-cccccc", "/127.0.0.1", None, frozenset({2}))))
    assert view.member("ccstream-b-200-bbbbbb") is view.members[0]
    assert view.member("ccstream-b-100-aaaaaa") is None
    assert view.members[0].instance == "ccstream-b-200-bbbbbb"
    # a member without a claim of ours is known by its client id
    assert view.member("ccstream-a-300-cccccc") is view.members[1]
