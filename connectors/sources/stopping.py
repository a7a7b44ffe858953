"""A stop request that every wait of a stream races: sleeps and awaits end early on stop.

The session loop never blocks on something a shutdown cannot interrupt (a backoff delay, a
token request, a handshake, waiting for Kafka): each goes through ``sleep`` or ``race``, so a
SIGTERM reaches every stream at once, whatever it was waiting for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Stopping:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def sleep(self, delay: float) -> bool:
        """Sleep ``delay`` seconds unless stopped first; True when the full delay passed."""
        if delay <= 0:
            return not self._event.is_set()
        try:
            await asyncio.wait_for(self._event.wait(), delay)
        except TimeoutError:
            return True
        return False

    async def race(self, awaitable: Awaitable[T]) -> T | None:
        """``awaitable``'s result, or None if a stop came first (the work is cancelled)."""
        loop = asyncio.get_running_loop()
        work: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        stopper = loop.create_task(self._event.wait())
        try:
            racers: set[asyncio.Future[object]] = {work, stopper}  # type: ignore[arg-type]
            await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if work.cancelled():
            return None
        return work.result()
