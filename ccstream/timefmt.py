"""The time formats ccstream reads and writes: RFC 3339 UTC with milliseconds. Pure.

``2024-01-15T10:30:00.000Z`` is the form of ``since``, of record headers (``ccstream-received-at``,
``ccstream-gap``), of cursors and of the real platforms' intervals. A time without an explicit
offset has no defined instant and is refused rather than guessed.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def rfc3339(epoch_s: float) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2024-01-15T10:30:00.000Z`` (the ``since`` form)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def parse_rfc3339(text: object) -> float | None:
    """Epoch seconds of an RFC 3339 / ISO 8601 time with an explicit offset (``Z`` or
    ``+hh:mm``); None for anything else (not a string, naive, unreadable, not finite)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None  # a naive time has no defined instant; refusing it is safer than guessing
    epoch = when.timestamp()
    return epoch if math.isfinite(epoch) else None
