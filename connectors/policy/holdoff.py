""""Nothing before T": one ``Retry-After`` clock shared by every request of one credential. Pure.

Genesys Cloud (docs/genesys-cloud.md, REST) and NICE CXone (docs/cxone.md, polling) both count a
request sent before a 429's ``Retry-After`` has passed as a rule broken, whichever stream or call
sends it. So the hold is per OAuth client / access key, not per request: every call of that
credential asks ``wait(now)`` first and sleeps that long. Seconds are measured from when the
answer was *received*, which is later than the server sent it: never too early.
"""

from __future__ import annotations


class HoldOff:
    def __init__(self) -> None:
        self.until = 0.0

    def hold(self, now: float, seconds: float) -> None:
        """An answer received at ``now`` said "not before ``seconds`` from now"."""
        if seconds > 0:
            self.until = max(self.until, now + seconds)

    def wait(self, now: float) -> float:
        """Seconds to wait before the next request of this credential (0: go)."""
        return max(0.0, self.until - now)
