"""The login and REST handlers (s.2, s.3, s.7) over the simulator's pure parts.

Order of the checks of every REST call (``gate``): the bearer token (401 ``bad.credentials`` if
not ours), the call counted, the s.11 rules (before a Retry-After; expired token -> 401), a
``rest_error`` fault, the 300/min window per token (429), then the call itself.
"""

from __future__ import annotations

import base64
import hmac
import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.genesys_cloud.access import retry_after_header
from simulator.genesys_cloud.analytics import PageEffect, QueryError
from simulator.genesys_cloud.channels import Channel, SubResult, Verdict
from simulator.genesys_cloud.faults import GcFault
from simulator.genesys_cloud.model import (
    PERMISSIONS,
    error_body,
    expand,
    iso_ms,
    new_uuid,
    parse_topic,
)

if TYPE_CHECKING:
    from simulator.genesys_cloud.server import GenesysCloudSimulator

MAX_LIST_PAGE = 500


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        login, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (login, password) if sep else None


def _number(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


async def token(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    """``POST /oauth/token``: client credentials, Basic auth, no refresh token (s.2)."""
    auth = basic_credentials(request.headers.get("Authorization", ""))
    form = await request.post()
    client_id = auth[0] if auth and auth[0] in sim.clients else None
    stats = sim.stats_of(client_id)
    stats.token_requests += 1
    now = sim.now()
    if client_id is not None and sim.retry.early(client_id, "token", now):
        sim.rules_book.count(client_id, "token_before_retry_after")
    fault = sim.faults.take_token(auth[0] if auth else None)
    if fault is not None:
        stats.faults[fault.kind] += 1
    if fault is not None and fault.status is not None:
        return token_error(sim, client_id, fault.status, fault.retry_after)
    spec = sim.clients.get(client_id or "")
    if auth is None or spec is None or not hmac.compare_digest(spec.secret, auth[1]):
        return token_error(sim, client_id, 401, None)
    if form.get("grant_type") != "client_credentials":
        stats.token_errors[400] += 1
        return web.json_response({"error": "unsupported_grant_type"}, status=400)
    platform_s = fault.expires_in if fault is not None and fault.expires_in else None
    lifetime = _number(sim.settings.scaled(platform_s or sim.settings.token_lifetime_s))
    access = sim.tokens.issue(spec.client_id, now, float(lifetime))
    stats.token_grants += 1
    return web.json_response({"access_token": access, "token_type": "bearer",
                              "expires_in": lifetime}, headers={"Cache-Control": "no-store"})


async def gate(sim: GenesysCloudSimulator, request: web.Request,
               route: str) -> str | web.Response:
    """The OAuth client of this call, or the error answer (see the module docstring)."""
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    info = sim.tokens.lookup(bearer if scheme.lower() == "bearer" else None)
    if info is None:
        return rest_error(sim, None, 401, "Invalid login credentials.")
    client_id = info.client_id
    stats = sim.stats_of(client_id)
    stats.rest_calls[f"{request.method} {route}"] += 1
    now = sim.now()
    sim.expire(now)  # a channel past its expiry is gone for this call, tick or not
    if sim.retry.early(client_id, "rest", now):
        sim.rules_book.count(client_id, "rest_before_retry_after")
    if info.expired(now):
        sim.rules_book.count(client_id, "expired_token")
        return rest_error(sim, client_id, 401, "Invalid login credentials.")
    fault = sim.faults.take_rest(client_id, request.method, request.path)
    if fault is not None:
        stats.faults[fault.kind] += 1
        return rest_error(sim, client_id, fault.status or 500, "simulated failure",
                              fault.retry_after)
    wait = sim.window.admit(bearer, now)
    if wait is not None:
        stats.rate_limited += 1
        return rest_error(sim, client_id, 429, "Rate limit exceeded the maximum. Retry the "
                          f"request in [{retry_after_header(wait)}] seconds", wait)
    return client_id


def _page_params(request: web.Request) -> tuple[int, int] | None:
    try:
        size = int(request.query.get("pageSize", "25"))
        number = int(request.query.get("pageNumber", "1"))
    except ValueError:
        return None
    if not 1 <= size <= MAX_LIST_PAGE or number < 1:
        return None
    return size, number


async def listing(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    """``GET /api/v2/routing/queues`` and ``GET /api/v2/users``, paged."""
    users = request.path.endswith("/users")
    route = "/api/v2/users" if users else "/api/v2/routing/queues"
    client_id = await gate(sim, request, route)
    if isinstance(client_id, web.Response):
        return client_id
    params = _page_params(request)
    if params is None:
        return rest_error(sim, client_id, 400, f"pageSize 1..{MAX_LIST_PAGE}, pageNumber >= 1")
    size, number = params
    org = sim.orgs[client_id]
    if users:
        entities = [{"id": u, "name": org.user_names[u], "state": "active"} for u in org.users]
    else:
        entities = [{"id": q, "name": org.queue_names[q]} for q in org.queues]
    total = len(entities)
    return web.json_response({
        "entities": entities[(number - 1) * size: number * size], "pageSize": size,
        "pageNumber": number, "total": total, "pageCount": math.ceil(total / size)})


async def create_channel(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    client_id = await gate(sim, request, "/api/v2/notifications/channels")
    if isinstance(client_id, web.Response):
        return client_id
    channel = create_channel_for(sim, client_id)
    return web.json_response({"id": channel.id, "connectUri": sim.connect_uri(channel.id),
                              "expires": iso_ms(channel.expires)})


async def head_channel(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    client_id = await gate(sim, request, "/api/v2/notifications/channels/{id}")
    if isinstance(client_id, web.Response):
        return client_id
    found = sim.board.find(client_id, request.match_info["channel"])
    return web.Response(status=200 if found is not None else 404)


def verdict(sim: GenesysCloudSimulator, client_id: str, topic: str) -> Verdict:
    """What the org says of a topic id (s.3: unknown/malformed vs missing permission)."""
    if len(topic) > sim.settings.max_topic_chars:
        return Verdict("invalid", "Topic id too long")
    org = sim.orgs[client_id]
    missing: list[str] = []
    for name in expand(topic):
        parsed = parse_topic(name)
        if parsed is None:
            return Verdict("invalid", "Invalid topic")
        names = org.queue_names if parsed.kind == "queues" else org.user_names
        if parsed.entity not in names:
            return Verdict("invalid", "Unknown entity")
        denied = sim.faults.denied(client_id, name)
        if denied is None:
            denied = sim.faults.denied(client_id, topic)
        if denied is not None:
            family = "queues" if parsed.kind == "queues" else parsed.event
            missing.extend(denied or PERMISSIONS[family])
    if missing:
        return Verdict("denied", "Missing permissions", tuple(dict.fromkeys(missing)))
    return Verdict("ok")


def _topic_ids(body: Any) -> list[str] | None:
    if not isinstance(body, list):
        return None
    ids = []
    for entry in body:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            return None
        ids.append(entry["id"])
    return ids


async def subscriptions(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    """GET (list), PUT (replace), POST (add) ``/channels/{id}/subscriptions`` (s.3)."""
    client_id = await gate(sim, request, "/api/v2/notifications/channels/{id}/subscriptions")
    if isinstance(client_id, web.Response):
        return client_id
    channel = sim.board.find(client_id, request.match_info["channel"])
    if channel is None:
        return rest_error(sim, client_id, 404, "channel not found")
    if request.method == "GET":
        return web.json_response({"entities": [t.to_json() for t in channel.topics.values()]})
    stats = sim.stats_of(client_id)
    stats.subscription_calls += 1
    try:
        ids = _topic_ids(await request.json())
    except ValueError:
        ids = None
    if ids is None:
        return rest_error(sim, client_id, 400, 'the body is a list of {"id": topic}')
    ignore = request.query.get("ignoreErrors", "false").lower() == "true"
    result = subscribe_for(sim, client_id, channel, ids, replace_all=request.method == "PUT",
                           ignore_errors=ignore)
    if result.status != 200:
        return rest_error(sim, client_id, result.status, result.message)
    return web.json_response({"entities": result.entities})


async def analytics(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    """``POST /api/v2/analytics/{conversations,users}/details/query`` (s.7)."""
    kind = "users" if "/users/" in request.path else "conversations"
    client_id = await gate(sim, request, f"/api/v2/analytics/{kind}/details/query")
    if isinstance(client_id, web.Response):
        return client_id
    stats = sim.stats_of(client_id)
    try:
        body = await request.json()
    except ValueError:
        return rest_error(sim, client_id, 400, "the body is not JSON")
    effect = PageEffect()
    fault = sim.faults.take_analytics(client_id)
    if fault is not None:
        stats.faults[fault.kind] += 1
        if fault.variant == "page_429":
            return rest_error(sim, client_id, 429, "simulated analytics limit", fault.retry_after)
        effect = page_effect(sim, fault)
    try:
        doc = sim.analytics.page(client_id, sim.stores[client_id], kind, body, now=sim.now(),
                                 effect=effect)
    except QueryError as err:
        return rest_error(sim, client_id, 400, str(err))
    stats.analytics_pages[kind] += 1
    return web.json_response(doc)


async def not_found(sim: GenesysCloudSimulator, request: web.Request) -> web.Response:
    client_id = await gate(sim, request, "(unknown)")
    if isinstance(client_id, web.Response):
        return client_id
    return rest_error(sim, client_id, 404, f"no resource at {request.path}")


# -- decisions carried out (the board decides, these count and answer) -------------------------
def create_channel_for(sim: GenesysCloudSimulator, client_id: str) -> Channel:
    now = sim.now()
    created = sim.board.create(client_id, new_uuid(sim.rng), now)
    stats = sim.stats_of(client_id)
    stats.channels_created += 1
    if created.over_limit:
        sim.rules_book.count(client_id, "too_many_channels")
    if created.evicted is not None:
        stats.channels_evicted += 1
    for action in created.actions:
        sim.execute(action, now)
    return created.channel


def subscribe_for(sim: GenesysCloudSimulator, client_id: str, channel: Channel, ids: list[str],
                  *, replace_all: bool, ignore_errors: bool) -> SubResult:
    now = sim.now()
    result = sim.board.subscribe(channel, ids, replace=replace_all, ignore_errors=ignore_errors,
                                 now=now, check=lambda topic: verdict(sim, client_id, topic))
    if result.over_limit:
        sim.rules_book.count(client_id, "over_1000_ids")
    if result.status == 200:
        rejected = sum(1 for e in result.entities or () if e["state"] == "Rejected")
        sim.stats_of(client_id).topics_rejected += rejected
        sim.touch(client_id, now)
    return result


def page_effect(sim: GenesysCloudSimulator, fault: GcFault) -> PageEffect:
    drift = fault.drift if fault.drift is not None else sim.rng.randint(1, 5)
    items = fault.items if fault.items is not None else sim.rng.randint(1, 3)
    if fault.variant == "drift":
        return PageEffect(drift=drift)
    if fault.variant == "insert":
        return PageEffect(insert=items)
    return PageEffect(insert=items, drift=drift)


def rest_error(sim: GenesysCloudSimulator, client_id: str | None, status: int, message: str,
               retry_after: float | None = None) -> web.Response:
    """The normalised error answer (s.3); a 429 carries Retry-After and is remembered."""
    stats = sim.stats_of(client_id)
    stats.rest_errors[status] += 1
    headers = {}
    if status in (429, 503):
        whole = retry_after_header(retry_after if retry_after is not None else 1.0)
        headers["Retry-After"] = str(whole)
        if status == 429:
            stats.too_many_requests_sent += 1
            if client_id is not None:
                sim.retry.promise(client_id, "rest", sim.now(), whole)
    return web.json_response(error_body(status, message, new_uuid(sim.rng)), status=status,
                             headers=headers)


def token_error(sim: GenesysCloudSimulator, client_id: str | None, status: int,
                retry_after: float | None) -> web.Response:
    """401 ``invalid_client`` (fatal for a client), 429 with Retry-After, or 5xx."""
    stats = sim.stats_of(client_id)
    stats.token_errors[status] += 1
    if status == 401:
        return web.json_response({"error": "invalid_client",
                                  "description": "client authentication failed"}, status=401)
    headers = {}
    body: dict[str, Any] = {"error": "server_error"}
    if status == 429:
        whole = retry_after_header(retry_after if retry_after is not None else 1.0)
        headers["Retry-After"] = str(whole)
        stats.too_many_requests_sent += 1
        if client_id is not None:
            sim.retry.promise(client_id, "token", sim.now(), whole)
        body = error_body(429, "Rate limit exceeded", new_uuid(sim.rng))
    return web.json_response(body, status=status, headers=headers)
