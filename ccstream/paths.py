"""Where ccstream keeps what outlives a process on a machine, outside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$CCSTREAM_CACHE`` or ``~/.cache/ccstream``: the fetched broker's jars
    (``devtools.devkafka``) and the dedup workers' member records (``pipeline.dedup.members``)."""
    env = os.environ.get("CCSTREAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ccstream"
