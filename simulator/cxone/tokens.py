"""Access-key tokens, pure: the password grant's answer and what a presented token is.

Contract s.2: the access token and the id_token are JWTs whose payload has ``iat``, ``exp`` and
``tenantId``; clients read them without verifying (they are HS256-signed with a per-run key all
the same, so that a made-up token is refused). A token's *expiry* is the earlier of ``exp`` and
issue + ``expires_in``, on the server clock. The server keeps it on its steady clock (the
wall clock before skew): a skew that changes after the grant never moves an expiry, and with a
constant skew the two readings agree. ``expire_now`` (the ``expire_token`` fault) revokes the
key's tokens: they answer 401, but using one is not a client defect, so it is counted apart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any


class TokenState(Enum):
    VALID = "valid"
    EXPIRED = "expired"      # past its expiry: a client defect (rule expired_token)
    REVOKED = "revoked"      # expire_token fault: the server's doing
    INVALID = "invalid"      # missing or not one of ours


@dataclass
class IssuedToken:
    access_key: str
    tenant: str
    jti: str
    issued_s: float          # steady clock
    expiry_s: float          # steady clock: the earlier of exp and issue + expires_in
    revoked: bool = False


@dataclass(frozen=True)
class Grant:
    access_token: str
    id_token: str
    expires_in: float
    record: IssuedToken

    def body(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "token_type": "Bearer",
                "expires_in": _number(self.expires_in), "id_token": self.id_token}


@dataclass(frozen=True)
class Check:
    state: TokenState
    record: IssuedToken | None = None

    @property
    def access_key(self) -> str | None:
        return None if self.record is None else self.record.access_key


def _number(value: float) -> float | int:
    """JSON NumericDate/seconds: an integer when whole (the real form), else ms precision."""
    rounded = round(value, 3)
    return int(rounded) if rounded == int(rounded) else rounded


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenBook:
    """Every token issued, by its text."""

    def __init__(self, key: bytes, issuer: str) -> None:
        self._key = key
        self.issuer = issuer
        self._tokens: dict[str, IssuedToken] = {}
        self._by_key: dict[str, list[IssuedToken]] = {}

    def _jwt(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{header}.{payload}".encode(), hashlib.sha256)
        return f"{header}.{payload}.{_b64(signature.digest())}"

    def issue(self, access_key: str, *, tenant: str, client_id: str, jti: str, steady_s: float,
              server_s: float, expires_in_s: float, exp_in_s: float) -> Grant:
        """A grant now: ``exp`` = server now + ``exp_in_s``, ``expires_in`` = ``expires_in_s``
        (the two differ only when a token_error fault shortens one of them)."""
        # exp is whole seconds, as real tokens have it (floored: never later than promised);
        # a lifetime compressed below a minute keeps ms so that it stays meaningful
        exp = int(server_s + exp_in_s) if exp_in_s >= 60 else _number(server_s + exp_in_s)
        expires_in = float(_number(expires_in_s))
        iat = int(server_s)
        common = {"iss": self.issuer, "sub": f"user:{access_key}", "iat": iat, "exp": exp,
                  "tenantId": tenant, "jti": jti}
        access = self._jwt({**common, "aud": "cxone-api", "role": "Administrator",
                            "icAgentId": "", "icClusterId": "SIM1"})
        id_token = self._jwt({**common, "aud": client_id, "name": f"API user {access_key}"})
        lifetime = min(float(exp) - server_s, expires_in)
        record = IssuedToken(access_key, tenant, jti, steady_s, steady_s + lifetime)
        self._tokens[access] = record
        self._by_key.setdefault(access_key, []).append(record)
        return Grant(access, id_token, expires_in, record)

    def check(self, token: str | None, steady_s: float) -> Check:
        record = self._tokens.get(token or "")
        if record is None:
            return Check(TokenState.INVALID)
        if steady_s >= record.expiry_s:
            return Check(TokenState.EXPIRED, record)
        if record.revoked:
            return Check(TokenState.REVOKED, record)
        return Check(TokenState.VALID, record)

    def expire_now(self, access_key: str) -> int:
        """Revoke every token of ``access_key`` (expire_token); how many were still valid."""
        live = [r for r in self._by_key.get(access_key, []) if not r.revoked]
        for record in live:
            record.revoked = True
        return len(live)

    def issued(self, access_key: str) -> int:
        return len(self._by_key.get(access_key, []))
