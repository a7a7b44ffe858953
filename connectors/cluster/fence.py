"""Fencing every slot's transactional id from outside the group (``ccstream cluster fence``).

Starting a transactional producer sends InitProducerId: the coordinator aborts the id's open
transaction, if any, and bumps its epoch, so every later commit of whoever held it fails with
``ProducerFenced``. A running slot does this when it takes a slot; this does it for the ids of a
slot count no instance uses any more (after the slot topic was repartitioned, design §5.1), so
that a forgotten process of the old count (paused, partitioned) can commit no cursor over the
new owners' ones and leaves no open transaction holding back ``read_committed`` readers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ccstream.config import Config
from connectors.kafka.delivery import safe_error
from connectors.policy.slots import transactional_id

# InitProducerIds in flight at once (each is one round trip to the id's coordinator)
CONCURRENCY = 8


@dataclass(frozen=True)
class Fenced:
    slot: int
    transactional_id: str
    error: str | None = None   # None: fenced

    @property
    def ok(self) -> bool:
        return self.error is None


async def fence_slots(config: Config, slots: range, timeout_s: float | None = None
                      ) -> list[Fenced]:
    """InitProducerId on the transactional id of each slot in ``slots``; one result each."""
    gate = asyncio.Semaphore(CONCURRENCY)
    budget = timeout_s if timeout_s is not None else config.cluster.transaction_timeout_s

    async def one(slot: int) -> Fenced:
        tid = transactional_id(config.cluster.group_id, slot)
        async with gate:
            producer = AIOKafkaProducer(
                bootstrap_servers=config.kafka.bootstrap_servers,
                client_id=f"ccstream-fence.slot-{slot}", transactional_id=tid,
                transaction_timeout_ms=int(config.cluster.transaction_timeout_s * 1000),
                acks="all", enable_idempotence=True,
                request_timeout_ms=int(config.kafka.request_timeout_s * 1000))
            try:
                async with asyncio.timeout(budget):
                    await producer.start()
            except (TimeoutError, KafkaError, OSError) as err:
                return Fenced(slot, tid, safe_error(err) if not isinstance(err, TimeoutError)
                              else f"no answer within {budget:g} s")
            finally:
                await producer.stop()
        return Fenced(slot, tid)

    return list(await asyncio.gather(*(one(n) for n in slots)))
