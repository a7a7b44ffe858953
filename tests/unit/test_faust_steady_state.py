"""The steady-state seams of faust_compat: the fetch loop's per-record delivery (PromptDelivery:
inline when it does not suspend, faust's race against the flow event when it does) and the
partitions' transactions committed concurrently (Producer.commit_transactions)."""

from __future__ import annotations

import asyncio
from typing import Any

import mode

from pipeline.faust_compat import PromptDelivery


class Service(PromptDelivery, mode.Service):
    """A mode service with the mixin, as faust's consumer has it."""


def run(body: Any) -> Any:
    async def main() -> Any:
        return await body(Service())
    return asyncio.run(main())


def test_a_delivery_that_does_not_suspend_runs_inline_and_the_flow_wait_never_starts() -> None:
    """The record is delivered before wait_first returns, and the flow event is not waited."""
    seen: list[str] = []

    async def deliver() -> str:
        seen.append("delivered")
        return "ok"

    async def flow() -> None:
        seen.append("flow waited")

    async def body(service: Service) -> Any:
        tasks = len(asyncio.all_tasks())
        result = await service.wait_first(deliver(), flow())
        return result, len(asyncio.all_tasks()) - tasks

    result, new_tasks = run(body)
    assert (result.results, result.stopped, seen, new_tasks) == (["ok"], False, ["delivered"], 0)


def test_a_delivery_that_suspends_is_finished_by_its_own_later_steps() -> None:
    """A delivery waiting on a full buffer resumes where it stopped and returns its value."""
    steps: list[str] = []

    async def body(service: Service) -> Any:
        room = asyncio.get_running_loop().create_future()
        flow = asyncio.Event()

        async def deliver() -> str:
            steps.append("first")
            got = await room
            steps.append(f"then {got}")
            return "delivered"

        asyncio.get_running_loop().call_soon(room.set_result, "room")
        return await service.wait_first(deliver(), flow.wait())

    result = run(body)
    assert (result.results, steps) == (["delivered"], ["first", "then room"])


def test_a_suspended_delivery_is_cancelled_when_the_flow_stops_first() -> None:
    """Flow suspended (a rebalance) while the delivery waits: it is cancelled, as in faust."""
    cleanup: list[str] = []

    async def body(service: Service) -> Any:
        never = asyncio.get_running_loop().create_future()
        flow = asyncio.Event()

        async def deliver() -> None:
            try:
                await never
            finally:
                cleanup.append("cancelled")

        asyncio.get_running_loop().call_soon(flow.set)
        result = await service.wait_first(deliver(), flow.wait())
        await asyncio.sleep(0)  # let the cancelled delivery run its finally
        return result

    result = run(body)
    assert (len(result.done), cleanup) == (1, ["cancelled"])


def test_other_waits_are_mode_s_own() -> None:
    """One awaitable with a timeout (Service.wait) goes through mode's wait_first unchanged."""
    async def body(service: Service) -> Any:
        return await service.wait_first(asyncio.sleep(0, "slept"), timeout=5.0)

    assert run(body).results == ["slept"]


class FakeTransactionProducer:
    """An aiokafka transactional producer's three calls, recorded; commit waits for ``gate``."""

    def __init__(self, name: str, log: list[str], gate: asyncio.Event,
                 fail: BaseException | None = None) -> None:
        self.name, self.log, self.gate, self.fail = name, log, gate, fail

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.log.append(f"{self.name} offsets {offsets} {group_id}")

    async def commit_transaction(self) -> None:
        self.log.append(f"{self.name} committing")
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.log.append(f"{self.name} committed")

    async def begin_transaction(self) -> None:
        self.log.append(f"{self.name} begun")


def test_partitions_transactions_commit_concurrently_and_a_failure_is_raised_after_all() -> None:
    """Both partitions are committing at once; one fenced producer fails the round, but only
    after the other partition's commit has ended."""
    from pipeline.faust_compat import Producer

    log: list[str] = []

    async def main() -> None:
        gate = asyncio.Event()
        driver: Any = type("Driver", (), {})()
        driver._transaction_producers = {
            "a-0": FakeTransactionProducer("p0", log, gate),
            "a-1": FakeTransactionProducer("p1", log, gate, fail=RuntimeError("fenced"))}
        driver._trn_locks = {"a-0": asyncio.Lock(), "a-1": asyncio.Lock()}
        commit = asyncio.create_task(Producer.commit_transactions(
            driver, {"a-0": {"tp0": 5}, "a-1": {"tp1": 7}}, "g"))
        while sum("committing" in line for line in log) < 2:
            await asyncio.sleep(0)  # both reach EndTxn before either is let through
        gate.set()
        try:
            await commit
        except RuntimeError as err:
            log.append(f"raised {err}")

    asyncio.run(main())
    assert log[-1] == "raised fenced"
    assert {"p0 committed", "p0 begun"} <= set(log) and "p1 begun" not in log
