"""What every flavour's ``ccstream simulate`` needs: option types and the serving loop.

``serve`` starts a simulator (any of the flavours: ``start()``, ``stop()``, ``settings.host`` /
``settings.port``), prints its URLs and ``[[streams]]`` snippet, and serves until SIGINT/SIGTERM
or ``duration``: 0 then, 1 with one line when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import Any


def _number(text: str, kind: type, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def positive(text: str) -> float:
    value: float = _number(text, float, "a number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def non_negative(text: str) -> float:
    value: float = _number(text, float, "a number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def count(text: str) -> int:
    """A whole number >= 1."""
    value: int = _number(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return value


def whole(text: str) -> int:
    """A whole number >= 0."""
    value: int = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


async def serve(sim: Any, snippet: Callable[[Any], str], duration: float | None) -> int:
    try:
        await sim.start()
    except OSError as err:
        print(f"ccstream simulate: cannot listen on {sim.settings.host}:{sim.settings.port}: "
              f"{err.strerror}", file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(snippet(sim), flush=True)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=duration)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await sim.stop()
    return 0
