"""The HTTP answers of the CXone simulator: discovery, the token endpoint and the API base.

Thin: every decision is in a pure module (``model`` selects rows, ``tokens`` checks tokens,
``rules`` counts defects, ``board`` says which fault is due); this module reads the request,
asks, and writes the answer. Order of an API request's checks (contract s.2, s.3): the rule
``early_request``; the token (401 if missing, unknown, expired or revoked; an expired one also
counts ``expired_token``); the base (an ``api_endpoint`` left by area_move answers 401 or
404); the version and endpoint (404); then rest_error, stall, and the answer itself.
"""

from __future__ import annotations

import asyncio
import math
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from simulator.cxone.faults import CxFault, CxFaultKind
from simulator.cxone.stats import UNKNOWN, CxStats
from simulator.cxone.tokens import TokenState
from simulator.cxone.values import COMPLETED, POLL_ENDPOINTS, RESULT_LIST, iso_ms, parse_iso_ms

if TYPE_CHECKING:
    from simulator.cxone.server import CxoneSimulator

API_MARKER = "/incontactapi/services/"
TOKEN_PATH = "/auth/token"  # noqa: S105 (a path, not a password)
_VERSION = re.compile(r"^v\d+(\.\d+)?$")
K = CxFaultKind


def _error(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error}, status=status, headers=headers)


def _query(request: web.Request, name: str) -> str | None:
    """A query parameter, its name matched case-insensitively (public clients vary)."""
    for key, value in request.query.items():
        if key.lower() == name.lower():
            return value
    return None


def _still_open(request: web.Request) -> bool:
    transport = request.transport
    return transport is not None and not transport.is_closing()


class CxApi:
    def __init__(self, sim: CxoneSimulator) -> None:
        self.sim = sim

    # -- discovery (contract s.2 steps 1 and 3) ----------------------------------------------
    def _discovery_fault(self, key: str | None, step: str, stats: CxStats) -> web.Response | None:
        fault = self.sim.board.take(K.DISCOVERY_ERROR, key, step=step)
        if fault is None:
            return None
        stats.discovery_errors += 1
        stats.faults[K.DISCOVERY_ERROR.value] += 1
        return _error(fault.status or 503, "discovery_unavailable")

    async def openid(self, request: web.Request) -> web.Response:
        sim = self.sim
        sim.openid_calls += 1
        stats = sim.stats_of(UNKNOWN)
        stats.discovery_openid += 1
        failed = self._discovery_fault(None, "openid", stats)
        if failed is not None:
            return failed
        base = sim.base_url
        return web.json_response({
            "issuer": base, "token_endpoint": base + TOKEN_PATH,
            "authorization_endpoint": base + "/auth/authorize",
            "userinfo_endpoint": base + "/auth/userinfo", "jwks_uri": base + "/auth/jwks",
            "response_types_supported": ["code", "id_token", "token id_token"],
            "grant_types_supported": ["password", "authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                      "client_secret_basic"],
            "id_token_signing_alg_values_supported": ["HS256"],
            "subject_types_supported": ["public"], "scopes_supported": ["openid"],
        })

    async def configuration(self, request: web.Request) -> web.Response:
        sim = self.sim
        tenant_id = _query(request, "tenantId")
        key = sim.key_of_tenant(tenant_id)
        stats = sim.stats_of(key or UNKNOWN)
        stats.discovery_configuration += 1
        failed = self._discovery_fault(key or UNKNOWN, "configuration", stats)
        if failed is not None:
            return failed
        if not tenant_id:
            return _error(400, "tenantId is required")
        if key is None:
            return _error(404, "tenant not found")
        return web.json_response({
            "private": False, "tenantId": tenant_id, "area": sim.area(key),
            "domain": sim.settings.domain, "api_endpoint": sim.api_endpoint(key),
            "ui_endpoint": sim.base_url, "auth_endpoint": sim.base_url,
        })

    # -- token endpoint (contract s.2 step 2) ------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        sim = self.sim
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        username = form.get("username", "")
        key = username if username in sim.tenants else UNKNOWN
        stats = sim.stats_of(key)
        stats.token_requests += 1
        sim.rule_book.request(key, sim.steady())
        fault = sim.board.take(K.TOKEN_ERROR, key)
        if fault is not None:
            stats.faults[K.TOKEN_ERROR.value] += 1
            if fault.status is not None:
                return self._token_error(key, stats, fault)
        if form.get("grant_type") != "password":
            return self._token_refusal(stats, 400, "unsupported_grant_type")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        if not client_secret and request.headers.get("Authorization", "").startswith("Basic "):
            client_id, client_secret = sim.basic_credentials(request.headers["Authorization"])
        tenant = sim.tenants.get(key)
        apps = [tenant] if tenant is not None else list(sim.tenants.values())
        if not any(t.client_id == client_id and t.client_secret == client_secret for t in apps):
            return self._token_refusal(stats, 401, "invalid_client")
        if tenant is None or form.get("password") != tenant.access_key_secret:
            return self._token_refusal(stats, 400, "invalid_grant")
        lifetime = sim.settings.token_lifetime_s
        grant = sim.grant(tenant, client_id,
                          fault.expires_in if fault and fault.expires_in else lifetime,
                          fault.exp_s if fault and fault.exp_s else lifetime)
        stats.tokens_issued += 1
        return web.json_response(grant.body(), headers={"Cache-Control": "no-store",
                                                        "Pragma": "no-cache"})

    def _token_refusal(self, stats: CxStats, status: int, error: str) -> web.Response:
        stats.token_errors[status] += 1
        return _error(status, error)

    def _token_error(self, key: str, stats: CxStats, fault: CxFault) -> web.Response:
        status = fault.status or 503
        stats.token_errors[status] += 1
        headers = self._retry_headers(key, stats, status, fault)
        error = {400: "invalid_grant", 401: "invalid_client", 429: "too_many_requests"}.get(
            status, "server_error")
        return _error(status, error, headers)

    def _retry_headers(self, key: str, stats: CxStats, status: int,
                       fault: CxFault) -> dict[str, str]:
        """Retry-After for a 429 (always, the fault's or the default) and for a 5xx (only if
        the fault gives one); a 429's is booked for the early_request rule."""
        sim = self.sim
        if status == 429:
            stats.throttled += 1
            if fault.kind is K.REST_ERROR and fault.retry_after is None:
                return {}  # contract s.8: a 429 of the API may come without Retry-After
            seconds = sim.settings.retry_after_s if fault.retry_after is None else fault.retry_after
            whole = max(1, math.ceil(seconds))
            sim.rule_book.throttled(key, sim.steady(), float(whole))
            return {"Retry-After": str(whole)}
        if status >= 500:
            stats.server_errors += 1
            if fault.retry_after is not None:
                return {"Retry-After": str(max(1, math.ceil(fault.retry_after)))}
        return {}

    # -- API base (contract s.3 and s.6) -----------------------------------------------------
    async def api(self, request: web.Request) -> web.StreamResponse:
        sim = self.sim
        low = request.path.lower()
        at = low.find(API_MARKER)
        if at < 0:
            return _error(404, "not found")
        prefix = low[:at].rstrip("/")
        version, _, endpoint = low[at + len(API_MARKER):].partition("/")
        endpoint = endpoint.strip("/")
        authorization = request.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
        check = sim.tokens.check(token, sim.steady())
        key = check.access_key or UNKNOWN
        stats = sim.stats_of(key)
        stats.api_requests += 1
        sim.rule_book.request(key, sim.steady())
        if endpoint not in POLL_ENDPOINTS:
            return await self._serve(request, key=key, stats=stats, state=check.state,
                                     prefix=prefix, version=version, endpoint=endpoint)
        ticket = sim.rule_book.poll_started(key, endpoint, sim.mono())
        try:
            return await self._serve(request, key=key, stats=stats, state=check.state,
                                     prefix=prefix, version=version, endpoint=endpoint)
        except asyncio.CancelledError:
            stats.abandoned += 1
            stats.poll(endpoint, "abandoned")
            raise
        finally:
            sim.rule_book.poll_ended(ticket, sim.mono())

    async def _serve(self, request: web.Request, *, key: str, stats: CxStats,
                     state: TokenState, prefix: str, version: str,
                     endpoint: str) -> web.StreamResponse:
        sim = self.sim
        poll = endpoint in POLL_ENDPOINTS
        refused = self._admit(key, stats, state, prefix)
        if refused is None and (not _VERSION.match(version) or not (poll or endpoint == COMPLETED)):
            refused = _error(404, "not found")
        if refused is not None:
            if poll:
                stats.poll(endpoint, "unauthorized" if refused.status == 401 else "not_found")
            return refused
        fault = sim.board.take(K.REST_ERROR, key, endpoint)
        if fault is not None:
            stats.faults[K.REST_ERROR.value] += 1
            status = fault.status or 503
            if poll:
                stats.poll(endpoint, "throttled" if status == 429 else "error")
            return _error(status, "throttled" if status == 429 else "server_error",
                          self._retry_headers(key, stats, status, fault))
        stall = sim.board.take(K.STALL, key, endpoint)
        if stall is not None:
            stats.faults[K.STALL.value] += 1
            stats.stalls += 1
            duration = sim.settings.stall_s if stall.duration_s is None else stall.duration_s
            if not await self._hold(request, duration):
                stats.abandoned += 1
                if poll:
                    stats.poll(endpoint, "abandoned")
                return web.Response(status=503)  # nobody is listening any more
        if poll:
            return self._poll(request, key, stats, endpoint)
        return self._completed(request, key, stats)

    def _admit(self, key: str, stats: CxStats, state: TokenState,
               prefix: str) -> web.Response | None:
        sim = self.sim
        if state is TokenState.INVALID:
            stats.invalid_token_requests += 1
            return _error(401, "invalid_token")
        if state is TokenState.EXPIRED:
            stats.expired_token_requests += 1
            sim.rule_book.expired_token(key)
            return _error(401, "token_expired")
        if state is TokenState.REVOKED:
            stats.revoked_token_requests += 1
            return _error(401, "token_expired")
        status = sim.base_status(key, prefix)
        if status is not None:
            stats.wrong_base_requests += 1
            return _error(status, "unauthorized" if status == 401 else "not found")
        return None

    async def _hold(self, request: web.Request, seconds: float) -> bool:
        """Hold the answer ``seconds``; False as soon as the client has closed the connection."""
        deadline = self.sim.mono() + seconds
        while (left := deadline - self.sim.mono()) > 0:
            if not _still_open(request):
                return False
            await asyncio.sleep(min(0.005, left))
        return _still_open(request)

    def _poll(self, request: web.Request, key: str, stats: CxStats,
              endpoint: str) -> web.Response:
        sim = self.sim
        raw = _query(request, "updatedSince")
        since = None if raw is None else parse_iso_ms(raw)
        if raw is not None and since is None:
            stats.poll(endpoint, "bad_request")
            return _error(400, "updatedSince is not an ISO 8601 time")
        truncate = sim.board.take(K.TRUNCATE, key, endpoint)
        repeat = sim.board.take(K.REPEAT_ROWS, key, endpoint)
        for fault in (truncate, repeat):
            if fault is not None:
                stats.faults[fault.fault_kind.value] += 1
        now_ms = sim.server_ms()
        answer = sim.model(key).answer(
            endpoint, since, now_ms=now_ms,
            retention_ms=round(sim.settings.scaled(sim.settings.retention_s) * 1000),
            truncate=truncate is not None,
            repeat=0 if repeat is None else (repeat.rows or 3))
        if _still_open(request):
            sim.ledger.answered(key, endpoint, now_ms, sim.steady())
        if answer.status == 304:
            stats.not_modified += 1
            stats.poll(endpoint, "not_modified")
            return web.Response(status=304)
        for version in answer.versions:
            version.answered += 1
        stats.rows_sent[endpoint] += len(answer.versions)
        stats.repeats_sent += answer.repeated
        headers = {}
        if answer.truncated:
            stats.truncations += 1
            headers["X-Data-Truncated"] = "true"
        stats.poll(endpoint, "truncated" if answer.truncated else "ok")
        body = {"resultSet": {"lastPollTime": iso_ms(now_ms),
                              RESULT_LIST[endpoint]: [v.row for v in answer.versions]}}
        return web.json_response(body, headers=headers)

    def _completed(self, request: web.Request, key: str, stats: CxStats) -> web.Response:
        sim = self.sim
        start = parse_iso_ms(_query(request, "startDate") or "")
        end = parse_iso_ms(_query(request, "endDate") or "")
        try:
            top = int(_query(request, "top") or 100)
            skip = int(_query(request, "skip") or 0)
        except ValueError:
            return _error(400, "top and skip are whole numbers")
        if start is None or end is None or top < 1 or skip < 0:
            return _error(400, "startDate and endDate (ISO 8601) are required; top >= 1")
        model = sim.model(key)
        page = model.completed.page(start, end, sim.server_ms(), skip,
                                    min(top, sim.settings.max_top))
        stats.backfill_pages += 1
        if not page.rows:
            stats.backfill_empty += 1
            return web.Response(status=204)
        stats.backfill_rows += len(page.rows)
        links: dict[str, Any] = {"self": str(request.url), "next": None}
        if page.more:
            links["next"] = str(request.url.update_query(skip=str(skip + len(page.rows))))
            shift = sim.board.take(K.COMPLETED_SHIFT, key, COMPLETED)
            if shift is not None:
                stats.faults[K.COMPLETED_SHIFT.value] += 1
                stats.relisted_rows += model.completed.relist(page, shift.rows or 3)
        return web.json_response({"completedContacts": [c.row for c in page.rows],
                                  "totalRecords": page.total, "_links": links})
