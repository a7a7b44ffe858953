"""Child processes that cannot outlive their parent (Linux ``PR_SET_PDEATHSIG``).

The dedup supervisor's worker and the brokers tests start die with SIGKILL when the process that
started them dies, even by ``kill -9``: nothing is left behind to hold a port, a group
membership or a transactional id.

Linux sends the parent-death signal when the *thread* that forked the child ends, not the
process (prctl(2)). A child started from a worker thread (``asyncio.to_thread``, an executor
that a closing event loop shuts down) would be killed as soon as that thread exits, with its
parent alive and well. ``popen_tied`` therefore forks only from a thread that lives as long as
the process: the main thread when called on it, else one spawner thread that is never stopped.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_PR_SET_PDEATHSIG = 1
# its one thread starts at the first use and is never shut down (it ends with the process)
_SPAWNER = ThreadPoolExecutor(1, thread_name_prefix="ccstream-spawner")


def tie_to_parent() -> None:
    """Run in the child before exec: die with SIGKILL when the parent dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def popen_tied(args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` of a child that dies with this process, and only then."""
    kwargs["preexec_fn"] = tie_to_parent  # only a prctl() between fork and exec: thread-safe
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **kwargs)
    return _SPAWNER.submit(lambda: subprocess.Popen(args, **kwargs)).result()
