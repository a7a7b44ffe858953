"""When a token expires and when to replace it. Pure: values in, instants out.

A token counts as expiring at the **earlier** of its JWT ``exp`` (when it is a JWT) and
``receipt + expires_in`` (the server's clock and ours may disagree by minutes), and is replaced
once that is less than the safety buffer away. A token whose whole lifetime is shorter than the
buffer would be "due" the moment it arrives and cause a refresh loop, so the buffer is capped at
half the lifetime. Opaque tokens (Genesys Cloud) have no ``exp``: ``expires_in`` alone decides.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any

import orjson


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, read without verifying the signature (we hold no key)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, or None (not a JWT, no claim, not a finite number)."""
    claims = jwt_claims(token)
    exp = claims.get("exp") if claims is not None else None
    return float(exp) if isinstance(exp, int | float) and math.isfinite(exp) else None


def expires_at(receipt: float, expires_in: float | None, exp: float | None) -> float:
    """The earlier of ``exp`` and ``receipt + expires_in`` (``inf`` if neither is known)."""
    candidates = [receipt + expires_in if expires_in is not None else math.inf,
                  exp if exp is not None else math.inf]
    return min(candidates)


def refresh_at(receipt: float, expires: float, buffer_s: float) -> float:
    """When the token must be replaced: ``buffer_s`` before expiry, capped at half its lifetime."""
    lifetime = max(expires - receipt, 0.0)
    return expires - min(buffer_s, lifetime / 2)


@dataclass(frozen=True)
class Token:
    access: str = field(repr=False)
    refresh: str | None = field(repr=False)
    receipt: float
    expires: float
    due: float

    def usable(self, now: float) -> bool:
        return now < self.due
