"""Restart a worker process that stopped itself to stay safe, forward signals, reap on exit.

The dedup worker exits with ``EXIT_NO_COMMIT`` (70) rather than let Faust commit offsets of
records it never processed (``pipeline/dedup/app.py``: a send failed, or Faust skipped records
fetched across a rebalance). That exit is safe: nothing was committed, the next run re-reads from
the last committed offset. ``ccstream dedup`` runs the worker under this small supervisor so that
users (and the demo and chaos tests) get the restart without an external one. SIGTERM/SIGINT go
to the child and end the supervision; the child dies with the supervisor even on ``kill -9``
(``PR_SET_PDEATHSIG``), so no orphan keeps partitions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

from ccstream.logs import get_logger
from ccstream.procs import tie_to_parent

log = get_logger("ccstream.supervisor")

CHILD_ENV = "CCSTREAM_SUPERVISED_CHILD"


def is_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1"


def supervise(argv: Sequence[str], restart_codes: frozenset[int], *,
              max_restarts: int = 20, delay_s: float = 0.5,
              sleep: Callable[[float], None] = time.sleep) -> int:
    """Run ``argv`` until it exits with a code not in ``restart_codes``; return that code."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        restarts = 0
        while True:
            child = subprocess.Popen(list(argv), env={**os.environ, CHILD_ENV: "1"},
                                     preexec_fn=tie_to_parent)  # noqa: PLW1509 - prctl only
            code = child.wait()
            if stopping or code not in restart_codes or restarts >= max_restarts:
                return code
            restarts += 1
            log.warning("worker.restarting", exit_code=code, restarts=restarts)
            sleep(min(delay_s * restarts, 5.0))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
