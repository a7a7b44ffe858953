"""The OAuth2 side of the simulator, pure: issue, rotate and check tokens (docs/protocols.md, s.1).

No I/O and no clock of its own: every call takes ``now`` (the server's clock, skew included).
Access tokens are real JWTs (HS256 over a per-simulator key) whose payload carries ``sub`` (the
client id), ``iat``, ``exp`` and ``jti``; clients read ``exp`` without verifying. Refresh tokens
are opaque and single-use: rotation invalidates the one presented (contract: "the old one is now
invalid"), and presenting it again is ``invalid_grant``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
from dataclasses import dataclass
from enum import Enum

import orjson


class TokenState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"      # revoked after an auth close: reuse is the infinite-401 defect
    INVALID = "invalid"      # not one of ours (bad signature, garbage, missing)


@dataclass(frozen=True)
class Grant:
    """A successful token answer."""

    client_id: str
    access_token: str
    expires_in: float
    refresh_token: str | None

    def body(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "access_token": self.access_token, "token_type": "bearer",
            "expires_in": round(self.expires_in, 3),
        }
        if self.refresh_token is not None:
            doc["refresh_token"] = self.refresh_token
        return doc


@dataclass(frozen=True)
class Check:
    """What a presented access token is, and whose (``client_id`` is None if unreadable)."""

    state: TokenState
    client_id: str | None = None
    jti: str | None = None
    exp: float | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenBook:
    """Every token the simulator issued: which are valid, used, revoked."""

    def __init__(self, rng: random.Random, refresh_lifetime_s: float) -> None:
        self._rng = rng
        self._key = rng.getrandbits(256).to_bytes(32, "big")
        self._refresh_lifetime = refresh_lifetime_s
        # refresh token -> (client id, expiry); removed when used (single use)
        self._refresh: dict[str, tuple[str, float]] = {}
        self._revoked: set[str] = set()
        self._issued: dict[str, list[str]] = {}

    def _sign(self, signing_input: bytes) -> str:
        return _b64(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def issue(self, client_id: str, now: float, lifetime_s: float, with_refresh: bool) -> Grant:
        header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
        jti = f"{self._rng.getrandbits(64):016x}"
        payload = _b64(orjson.dumps({
            "iss": "ccstream-simulator", "sub": client_id, "jti": jti,
            "iat": int(now), "exp": round(now + lifetime_s, 3),
        }))
        self._issued.setdefault(client_id, []).append(jti)
        signing_input = f"{header}.{payload}".encode()
        token = f"{header}.{payload}.{self._sign(signing_input)}"
        refresh = None
        if with_refresh:
            refresh = f"rt-{self._rng.getrandbits(128):032x}"
            self._refresh[refresh] = (client_id, now + self._refresh_lifetime)
        return Grant(client_id, token, lifetime_s, refresh)

    def redeem(self, refresh_token: str, client_id: str, now: float) -> bool:
        """Consume a refresh token; False (``invalid_grant``) if unknown, used, expired or not
        this client's."""
        entry = self._refresh.pop(refresh_token, None)
        if entry is None:
            return False
        owner, expiry = entry
        return owner == client_id and now < expiry

    def check(self, token: str | None, now: float) -> Check:
        if not token or token.count(".") != 2:
            return Check(TokenState.INVALID)
        header, payload, signature = token.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{header}.{payload}".encode())):
            return Check(TokenState.INVALID)
        try:
            claims = orjson.loads(_unb64(payload))
            client_id, jti, exp = claims["sub"], claims["jti"], float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return Check(TokenState.INVALID)
        if jti in self._revoked:
            return Check(TokenState.REVOKED, client_id, jti, exp)
        if now >= exp:
            return Check(TokenState.EXPIRED, client_id, jti, exp)
        return Check(TokenState.VALID, client_id, jti, exp)

    def revoke(self, jti: str) -> None:
        """Revoke one access token (after an auth close on its connection)."""
        self._revoked.add(jti)

    def revoke_client(self, client_id: str) -> None:
        """Revoke every access token of a client issued so far (the ``expire_token`` fault)."""
        self._revoked.update(self._issued.pop(client_id, []))


def peek_client(token: str | None) -> str | None:
    """The ``sub`` of a JWT without any check: who is knocking, for fault targeting and stats."""
    if not token or token.count(".") != 2:
        return None
    try:
        sub = orjson.loads(_unb64(token.split(".")[1])).get("sub")
    except (ValueError, AttributeError):
        return None
    return sub if isinstance(sub, str) else None
