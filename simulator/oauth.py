"""The OAuth2 token endpoint of the simulator (docs/protocols.md, section 1), over ``TokenBook``.

Order of the checks: scripted answer (``token_error`` fault), credentials (401
``invalid_client``), refresh token (400 ``invalid_grant``: unknown, used, expired or another
client's), grant type. Every request is counted, and one made before a Retry-After this client
was given had elapsed is counted as early.
"""

from __future__ import annotations

import base64
import hmac
from typing import TYPE_CHECKING

from aiohttp import web

from simulator.faults import FaultKind
from simulator.ledger import ClientStats

if TYPE_CHECKING:
    from simulator.server import Simulator


def basic_credentials(header: str) -> tuple[str, str] | None:
    """``(client_id, secret)`` from ``Authorization: Basic base64(id:secret)``, or None."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


async def token_endpoint(sim: Simulator, request: web.Request) -> web.Response:
    """``POST /oauth/token``: the grants and error answers of docs/protocols.md section 1."""
    auth = basic_credentials(request.headers.get("Authorization", ""))
    form = await request.post()
    client_id = auth[0] if auth else None
    stats = sim._client_stats(client_id)
    stats.token_requests += 1
    if sim._note_attempt(client_id, "token"):
        stats.early_token_requests += 1
    grant_type = str(form.get("grant_type", ""))
    refresh = grant_type == "refresh_token"
    fault = sim._take_answer(FaultKind.TOKEN_ERROR, client_id, None, refresh)
    if fault is not None:
        return token_error(sim, stats, client_id, fault.status or 500, fault.retry_after)
    spec = sim.clients.get(client_id or "")
    if auth is None or spec is None or not hmac.compare_digest(spec.secret, auth[1]):
        return token_error(sim, stats, client_id, 401, None)
    now = sim.now()
    if refresh and not sim._tokens.redeem(str(form.get("refresh_token", "")),
                                           spec.client_id, now):
        return token_error(sim, stats, client_id, 400, None)
    if grant_type not in ("client_credentials", "refresh_token"):
        stats.token_errors[400] += 1
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    lifetime = sim.settings.token_lifetime(spec.platforms[0])
    grant = sim._tokens.issue(spec.client_id, now, lifetime,
                               sim.settings.issue_refresh_tokens)
    stats.token_grants[grant_type] += 1
    return web.json_response(grant.body(), headers={"Cache-Control": "no-store"})

def token_error(sim: Simulator, stats: ClientStats, client_id: str | None, status: int,
                retry_after: float | None) -> web.Response:
    stats.token_errors[status] += 1
    error = {400: "invalid_grant", 401: "invalid_client", 429: "rate_limited"}.get(
        status, "server_error")
    headers = {}
    if status in (429, 503):
        headers["Retry-After"] = sim._retry_after(client_id, "token", retry_after or 1.0)
    return web.json_response({"error": error}, status=status, headers=headers)
