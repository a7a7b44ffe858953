"""This process's salt and the salted random sources of its streams (integration guide,
"Thundering herd": identical nodes must not draw identical jitter).

The I/O half of the backoff policy: it reads the pid, the hostname and a random id, which the pure
``policy.backoff`` must not; ``Backoff`` takes the resulting ``random()`` as a parameter.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import uuid


def instance_salt() -> bytes:
    """This process's salt: pid, hostname and a random id (integration guide, "Thundering herd").

    The random id alone would do; pid and hostname make the salt explainable in a post-mortem.
    """
    return f"{os.getpid()}|{socket.gethostname()}|{uuid.uuid4().hex}".encode()


def salted_random(salt: bytes, stream: str = "") -> random.Random:
    """A random source seeded from the instance salt and the stream name.

    Identical nodes started at the same instant would otherwise draw identical jitter and
    reconnect in waves; each stream gets its own sequence so that streams of one process do not
    move in lockstep either.
    """
    digest = hashlib.sha256(salt + b"|" + stream.encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
