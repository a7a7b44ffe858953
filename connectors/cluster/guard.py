"""The membership lease at the two doors of every source: its sends and its (re)connects.

A source knows nothing of the cluster; what it is given (``SourceDeps``) is wrapped so that the
lease is checked before every record it hands to Kafka and before every connection attempt, by
one comparison against the clock. After a SIGSTOP the very first frame read, or the first
reconnect after a kick by the platform, meets an expired lease:

* a send is refused as a Kafka failure (``LeaseExpiredError``): the source's delivery marks the
  record failed (so the resume point never moves over it), closes the socket with 1000 and waits
  for Kafka before connecting again, which it never gets to do;
* a connection attempt is held until the source is stopped (the rate limiter answers "wait"),
  so a zombie cannot win a kick war with the new owner.

Either way ``on_denied`` tells the supervisor at once, which stops the slot's streams.
"""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.errors import KafkaError

from connectors.kafka.sink import DeliveryFuture
from connectors.platforms import Frame
from connectors.policy.ratelimit import TokenBucket
from connectors.sources.base import Sink

# what a refused connection attempt waits (the slot stops the source long before)
HOLD_S = 3600.0


class LeaseExpiredError(KafkaError):  # type: ignore[misc]  # aiokafka is untyped
    """This instance cannot confirm it is still a member: it must not write."""

    retriable = True


class GuardedSink:
    """A ``Sink`` that sends only while ``allowed()``."""

    def __init__(self, sink: Sink, allowed: Callable[[], bool],
                 on_denied: Callable[[], None]) -> None:
        self._sink = sink
        self._allowed = allowed
        self._on_denied = on_denied

    @property
    def raw_limit(self) -> int:
        return self._sink.raw_limit

    @raw_limit.setter
    def raw_limit(self, value: int) -> None:
        self._sink.raw_limit = value

    def _check(self) -> None:
        if not self._allowed():
            self._on_denied()
            raise LeaseExpiredError("membership lease expired: not sending")

    async def send_event(self, stream: str, platform: str, frame: Frame,
                         received_at: float) -> DeliveryFuture:
        self._check()
        return await self._sink.send_event(stream, platform, frame, received_at)

    async def send_dlq(self, stream: str, platform: str, raw: bytes, reason: str, *,
                       received_at: float, binary: bool = False) -> DeliveryFuture:
        self._check()
        return await self._sink.send_dlq(stream, platform, raw, reason,
                                         received_at=received_at, binary=binary)

    async def refresh_limits(self) -> None:
        await self._sink.refresh_limits()


class GuardedLimiter(TokenBucket):
    """The process's reconnect bucket, refusing every attempt while not ``allowed()``."""

    def __init__(self, bucket: TokenBucket, allowed: Callable[[], bool],
                 on_denied: Callable[[], None]) -> None:
        # not calling super().__init__: every call goes to the shared bucket
        self._bucket = bucket
        self._allowed = allowed
        self._on_denied = on_denied

    def reserve(self, now: float) -> float:
        if not self._allowed():
            self._on_denied()
            return HOLD_S
        return self._bucket.reserve(now)

    def available(self, now: float) -> float:
        return self._bucket.available(now)
