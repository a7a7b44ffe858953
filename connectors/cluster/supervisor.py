"""Cluster mode's driver: the group membership, the lease, the slots, the shutdown.

One instance joins the consumer group ``cluster.group_id`` on the slot topic with the slot
assignor; the partitions it is assigned are the slots it runs (``slot.Slot``). Around that:

* **Eager rebalances without reconnect storms.** aiokafka revokes every partition before each
  rebalance (``on_partitions_revoked``): the slots keep running, each RUNNING slot commits its
  cursors now (bounded) and no new fence starts until the new assignment is known. Then
  (``on_partitions_assigned``, which must return quickly: aiokafka's heartbeat is stopped while it
  runs) kept slots get one validation transaction, removed slots a graceful release, added slots
  are started. A member keeps its slots in its JoinGroup claim, and the assignor is sticky, so
  the streams of a kept slot never notice a rebalance.
* **The lease** (``policy.lease``): renewed every heartbeat interval when ``DescribeGroups``
  lists this instance; checked before every connect, send, commit and fence. When it runs out
  every slot stops (close 1000, flush, *no* commit: another instance may already run it); when
  it comes back the slots still assigned start again (fence, read, connect).
* **Fenced** (``ProducerFenced``): another instance started the slot's producer: the slot's
  streams stop and nothing is committed. It starts again only if a later assignment still gives
  it to us, after a heartbeat interval (time for a stale assignment to be corrected).
* **SIGTERM:** every slot is released (final cursors) *before* the consumer leaves the group, so
  the next owner starts from the released cursors; all within the grace period.
* **Failures:** a background task that dies (the group loop, the lease, the commits) stops the
  instance with one line; a repartitioned slot topic or a missing transactional-id ACL too.

Where this departs from the researched design (docs/cluster.md links it), and why:

* A lease expiry releases *without* a final commit (the design lists it with the graceful
  revokes): the instance cannot tell whether it was replaced, a commit could only help if it was
  not, and skipping it costs replays, never a loss (``policy.slot_states.commits_on_release``).
* ``on_partitions_revoked`` also waits (bounded) for fences of ours still in flight: an
  InitProducerId that lands after the next owner's would fence the rightful owner.
* No fence without a lease, and none during a rebalance; the first fence waits for the first
  renewal (one describe, a few ms after joining).
* A slot fenced while the group still gives it to us is started again, after two heartbeat
  intervals (the design restarts only kept slots whose validation commit was fenced): otherwise
  a fence race between generations could leave a slot run by nobody until the next rebalance.
* Slots without a stream start no producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ccstream import metrics
from ccstream.config import AnyStream
from ccstream.logs import get_logger
from ccstream.topics import partition_count
from connectors.cluster.assignor import SlotAssignor
from connectors.cluster.group import describe_once
from connectors.cluster.member import GroupMember, LeaseKeeper, instance_client_id
from connectors.cluster.slot import Slot, SlotContext, SlotFatalError
from connectors.kafka.cursor_store import CursorTail
from connectors.kafka.delivery import safe_error
from connectors.policy import slot_states
from connectors.policy.slot_states import CommitOutcome, Next, RevokeReason, SlotState
from connectors.policy.slots import SLOT_COUNT_CHANGED, Claim, fingerprint, slot_of, weights
from connectors.runner import EXIT_FAILED, EXIT_OK, Outcome

if TYPE_CHECKING:
    from connectors.runner import Runner, SourceBuilder

LEAVE_TIMEOUT_S = 2.0


class ClusterSupervisor:
    def __init__(self, runner: Runner, builder: SourceBuilder) -> None:
        self.runner = runner
        self.builder = builder
        self.config = runner.config
        self.cluster = runner.config.cluster
        self.topic = runner.config.topics.slots
        self.clock = time.monotonic
        self.instance = instance_client_id(runner.config)
        self.log = get_logger("ccstream.cluster", instance=self.instance)
        self.keeper = LeaseKeeper(self.config, self.instance, self.clock,
                                  on_held=self.reconcile, on_expired=self._lease_expired,
                                  log=self.log)
        self.slots: dict[int, Slot] = {}
        self.assigned: frozenset[int] = frozenset()
        self.count = 0
        self.joined = False
        self.in_rebalance = False
        self.stopping = False
        self._rebalance_at: float | None = None
        self._led_seen = 0
        self._fatal: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releasing: set[int] = set()
        self._starting: set[int] = set()
        self._resetting: set[int] = set()
        self._fenced_at: dict[int, float] = {}
        self._abrupt = False
        self._fingerprint = ""
        self._weights: dict[int, int] = {}
        self.tail = CursorTail(self.config.kafka.bootstrap_servers, self.config.topics.cursors,
                               client_id=self.instance)
        self.assignor = SlotAssignor(self.topic, self._claim)
        self.member: GroupMember | None = None

    # -- start-up --------------------------------------------------------------------------------
    async def _prepare(self) -> str | None:
        """The slot count and its streams; the one line why not, if this cannot run."""
        bootstrap = self.config.kafka.bootstrap_servers
        count = await partition_count(bootstrap, self.topic)
        if count == 0:
            return f"topics.slots: the slot topic {self.topic} does not exist"
        view = await describe_once(bootstrap, self.cluster.group_id, self.topic)
        others = sorted({m.claim.slots for m in view.members if m.claim is not None
                         and m.claim.slots != count}) if view.live else []
        if others:
            return (f"topics.slots: {self.topic} has {count} partitions but the running group "
                    f"{self.cluster.group_id} maps streams over {others[0]} slots; stop every "
                    f"instance of the group before changing the slot count")
        self.count = count
        by_slot: dict[int, list[AnyStream]] = {}
        for stream in self.config.streams:
            by_slot.setdefault(slot_of(stream.name, count), []).append(stream)
        self._weights = weights((s.name for s in self.config.streams), count)
        self._fingerprint = fingerprint(((s.name, s.platform) for s in self.config.streams),
                                        count)
        ctx = SlotContext(self.config, self.instance, self.runner.sink, self.runner.sink.flush,
                          self.tail, self.builder, self.keeper.allowed, self.keeper.denied,
                          self.builder.on_change, self.clock, self.runner.wall)
        self.slots = {n: Slot(ctx, n, by_slot.get(n, [])) for n in range(count)}
        for stream in self.config.streams:
            metrics.STREAM_OWNED.labels(stream.name).set(0)
        return None

    def _claim(self) -> Claim:
        states = {n: s.state for n, s in self.slots.items()}
        owned = frozenset() if self.stopping else slot_states.claims(
            states, lease_valid=self.allowed())
        return Claim(self.instance, self.count, self._fingerprint, owned, self._weights)

    # -- run -----------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        started = self.clock()
        problem = await self._prepare()
        if problem is not None:
            return Outcome(EXIT_FAILED, problem)
        self.member = member = GroupMember(
            self.config, self.instance, self.assignor, revoked=self.before_rebalance,
            assigned=self.assigned_now, fail=self.fail, log=self.log)
        try:
            await self.tail.start()
            await self.keeper.start()
            self.log.info("cluster.starting", group=self.cluster.group_id, slots=self.count,
                          streams=len(self.config.streams), fingerprint=self._fingerprint,
                          lease_s=self.keeper.lease.duration_s,
                          seconds=round(self.clock() - started, 3))
            await member.start()
            loops = [self._spawn(member.poll(), "cluster:poll", critical=True),
                     self._spawn(self.keeper.renew(), "cluster:lease", critical=True),
                     self._spawn(self.keeper.watch(), "cluster:lease-watch", critical=True),
                     self._spawn(self._commit_loop(), "cluster:commits", critical=True),
                     self._spawn(self.tail.wait(), "cluster:cursor-tail", critical=True)]
            stop: asyncio.Future[Any] = asyncio.ensure_future(self.runner.stopping.wait())
            fatal: asyncio.Future[Any] = self._fatal
            await asyncio.wait({stop, fatal}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            return await self._shutdown(loops)
        finally:
            await self._close()

    # -- rebalances --------------------------------------------------------------------------------
    async def before_rebalance(self) -> None:
        """All partitions revoked (eager): keep running, commit now, fence nothing new."""
        self.in_rebalance = True
        self._rebalance_at = self.clock()
        metrics.CLUSTER_REBALANCES.inc()
        running = [s for s in self.slots.values() if s.state is SlotState.RUNNING]
        self.log.info("cluster.rebalance_started", running=[s.number for s in running])
        if self.stopping:
            return
        budget = self.cluster.revoke_commit_timeout_s
        fences = [s.fencing.wait() for s in self.slots.values() if not s.fencing.is_set()]
        if fences:  # none of our InitProducerIds may land after the next owner's
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*fences), budget)
        outcomes = await asyncio.gather(*(s.commit(timeout_s=budget) for s in running),
                                        return_exceptions=True)
        for slot, outcome in zip(running, outcomes, strict=True):
            self._after_commit(slot, outcome)

    def assigned_now(self, assigned: frozenset[int]) -> None:
        """The new assignment (aiokafka's heartbeat waits for this: only schedule work)."""
        self.in_rebalance = False
        if self._rebalance_at is not None:
            metrics.CLUSTER_REBALANCE_SECONDS.observe(self.clock() - self._rebalance_at)
        note = self.assignor.note
        leader = self.assignor.led != self._led_seen
        self._led_seen = self.assignor.led
        if note.get("error") == SLOT_COUNT_CHANGED:
            self._abrupt = True
            self.fail(f"topics.slots: the partition count of {self.topic} changed under the "
                      f"running group (was {self.count}); every instance stops: once all are "
                      f"stopped, `ccstream cluster fence` the old count, then start them")
            return
        if note.get("mismatched"):
            self.log.warning("cluster.config_mismatch", member=self.instance,
                             fingerprint=self._fingerprint)
        lease_valid = self.allowed()
        if not lease_valid:  # act on an expiry now: the watch may not have seen it yet
            self.keeper.denied()
        plan = slot_states.plan({n: s.state for n, s in self.slots.items()}, assigned,
                                lease_valid=lease_valid, releasing=frozenset(self._releasing))
        self.assigned = assigned
        if not self.joined:
            self.joined = True
            self.log.info("cluster.joined", group=self.cluster.group_id)
        self.log.info("cluster.assigned", added=sorted(plan.added), removed=sorted(plan.removed),
                      kept=sorted(plan.kept), leader=leader, members=note.get("members"),
                      streams=sum(len(self.slots[n].streams) for n in assigned
                                  if n in self.slots))
        if self.stopping:
            return
        for number in plan.kept:
            self._spawn(self._validate(self.slots[number]), f"slot-{number}:validate")
        self.reconcile()
        self.keeper.renew_now()

    def reconcile(self) -> None:
        """Start what is ours and idle, release what is no longer ours."""
        if self.stopping or self.in_rebalance:
            return
        for number, slot in self.slots.items():
            slot.wanted = number in self.assigned
            if slot.wanted and slot.state in (SlotState.UNOWNED, SlotState.STOPPED) \
                    and number not in self._releasing:
                slot.move(SlotState.ASSIGNED)
            if slot.wanted and slot.state is SlotState.ASSIGNED and number not in self._starting:
                self._starting.add(number)
                self._spawn(self._start(slot), f"slot-{number}:start")
            elif not slot.wanted and slot.state in slot_states.CLAIMABLE:
                self.release(slot, RevokeReason.REVOKED)

    async def _start(self, slot: Slot) -> None:
        attempt = 0
        try:
            while slot.wanted and not self.stopping and slot.state is SlotState.ASSIGNED:
                fenced = self._fenced_at.get(slot.number)
                if fenced is not None:  # give a stale assignment time to be corrected
                    await asyncio.sleep(max(0.0, fenced + 2 * self.cluster.heartbeat_interval_s
                                            - self.clock()))
                await self._ready()
                if not slot.wanted or self.stopping or self.in_rebalance:
                    continue
                if await slot.start(self._may_fence):
                    self._fenced_at.pop(slot.number, None)
                    self._owned_changed()
                    return
                attempt += 1
                settings = self.config.connector
                await asyncio.sleep(min(settings.backoff_max_s,
                                        settings.backoff_base_s * 2 ** min(attempt, 10)))
        finally:
            self._starting.discard(slot.number)

    def _may_fence(self) -> bool:
        return not self.stopping and not self.in_rebalance and self.allowed()

    async def _ready(self) -> None:
        """Until the lease holds and no rebalance is under way (or we stop)."""
        # the lease is a deadline on the clock, not an event: polled, briefly
        while not self.stopping and (self.in_rebalance or not self.allowed()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    async def _validate(self, slot: Slot) -> None:
        if slot.state is SlotState.RUNNING:
            self._after_commit(slot, await slot.commit(force=True))

    def release(self, slot: Slot, reason: RevokeReason) -> None:
        if slot.number in self._releasing:
            return
        self._releasing.add(slot.number)
        self._spawn(self._release(slot, reason), f"slot-{slot.number}:release")

    async def _release(self, slot: Slot, reason: RevokeReason) -> None:
        try:
            await slot.release(reason)
        finally:
            self._releasing.discard(slot.number)
            self._owned_changed()
        self.reconcile()

    # -- cursors ---------------------------------------------------------------------------------
    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.connector.cursor_commit_interval_s)
            running = [s for s in self.slots.values() if s.state is SlotState.RUNNING]
            outcomes = await asyncio.gather(*(s.commit() for s in running),
                                            return_exceptions=True)
            for slot, outcome in zip(running, outcomes, strict=True):
                self._after_commit(slot, outcome)
            for slot in running:  # a producer left broken while the lease or a rebalance held
                if slot.broken:
                    self._reset(slot)

    def _reset(self, slot: Slot) -> None:
        """A new producer for ``slot`` (it fences the id's holder: only while we may act)."""
        if self._may_fence() and slot.number not in self._resetting:
            self._resetting.add(slot.number)
            task = self._spawn(slot.reset_producer(self._may_fence), f"slot-{slot.number}:reset")
            task.add_done_callback(lambda _: self._resetting.discard(slot.number))

    def _after_commit(self, slot: Slot, outcome: CommitOutcome | BaseException) -> None:
        if isinstance(outcome, BaseException):
            self.log.error("cursor.commit_failed", slot=slot.number, error=safe_error(outcome))
            return
        step = slot_states.after_commit(outcome, lease_valid=self.allowed())
        if step is Next.STOP_FENCED:
            self._fenced_at[slot.number] = self.clock()
            self.release(slot, RevokeReason.FENCED)
        elif step is Next.RESET_PRODUCER:
            self._reset(slot)

    # -- the lease -------------------------------------------------------------------------------
    def allowed(self) -> bool:
        return self.keeper.allowed()

    def _lease_expired(self) -> None:
        """Membership not confirmed in time: every slot stops, committing nothing.

        A slot assigned but not started yet is given up too (ASSIGNED -> UNOWNED): after an
        expiry the instance holds nothing, so whatever a later assignment gives it starts
        afresh, and a slot of the old assignment is never taken for a kept one.
        """
        self.log.warning("cluster.lease_expired",
                         running=[n for n, s in self.slots.items()
                                  if s.state is SlotState.RUNNING])
        for slot in self.slots.values():
            if slot.state in (SlotState.ASSIGNED, SlotState.STARTING, SlotState.RUNNING):
                self.release(slot, RevokeReason.LEASE)

    # -- failures and shutdown -----------------------------------------------------------------
    def fail(self, line: str) -> None:
        if not self._fatal.done():
            self.log.error("cluster.failed", error=line)
            self._fatal.set_result(line)

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str, *,
               critical: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            error = t.exception()
            if isinstance(error, SlotFatalError):
                self.fail(str(error))
            elif error is not None:
                self.fail(f"{name} failed: {safe_error(error)}")
            elif critical and not self.stopping:
                self.fail(f"{name} ended")

        task.add_done_callback(done)
        return task

    def _owned_changed(self) -> None:
        running = [s for s in self.slots.values() if s.state is SlotState.RUNNING]
        self.runner.sources[:] = [src for s in running for src in s.running_sources()]
        metrics.CLUSTER_SLOTS_OWNED.set(len(running))
        metrics.CLUSTER_STREAMS_OWNED.set(sum(len(s.streams) for s in running))

    async def _shutdown(self, loops: list[asyncio.Task[Any]]) -> Outcome:
        started = self.clock()
        deadline = started + self.config.connector.grace_period_s - 0.5
        self.stopping = True
        fatal = self._fatal.result() if self._fatal.done() else None
        # a repartitioned slot topic: our view of which streams are ours is stale, commit nothing
        reason = RevokeReason.SLOT_COUNT if self._abrupt else RevokeReason.SHUTDOWN
        for slot in self.slots.values():
            slot.wanted = False
        releases = [asyncio.ensure_future(s.release(reason)) for s in self.slots.values()
                    if s.state in slot_states.CLAIMABLE or s.number in self._releasing]
        clean = True
        if releases:
            done, pending = await asyncio.wait(
                releases, timeout=max(0.1, deadline - LEAVE_TIMEOUT_S - self.clock()))
            clean = not pending and all(not t.exception() for t in done)
            for task in pending:
                task.cancel()
        self._owned_changed()
        for task in loops:
            task.cancel()
        try:  # leave only now: the next owners find the final cursors
            async with asyncio.timeout(max(0.1, min(LEAVE_TIMEOUT_S, deadline - self.clock()))):
                if self.member is not None:
                    await self.member.leave()
        except Exception as err:  # noqa: BLE001 (bounded, reported)
            clean = False
            self.log.error("connector.shutdown", step="leave", error=safe_error(err))
        self.log.info("cluster.left", clean=clean, static=self.cluster.instance_id is not None,
                      seconds=round(self.clock() - started, 3))
        if fatal is not None:
            return Outcome(EXIT_FAILED, fatal)
        failed = self.runner.failure_outcome()
        if failed is not None:
            return failed
        if not clean:
            return Outcome(EXIT_FAILED, "shutdown incomplete: see the cluster.left log")
        return Outcome(EXIT_OK)

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.member is not None:
            with contextlib.suppress(Exception):
                await self.member.leave()
        await self.tail.stop()
        await self.keeper.close()
        for slot in self.slots.values():
            await slot.close()
