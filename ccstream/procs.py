"""Child processes that cannot outlive their parent (Linux ``PR_SET_PDEATHSIG``).

The dedup supervisor's worker and the brokers tests start die with SIGKILL when the process that
started them dies, even by ``kill -9``: nothing is left behind to hold a port, a group
membership or a transactional id.
"""

from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def tie_to_parent() -> None:
    """Run in the child before exec: die with SIGKILL when the parent dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
