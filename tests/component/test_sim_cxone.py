"""The CXone simulator serves cxone.md: one test per server rule, per fault and per client rule.

Clients here are plain aiohttp, written in this file: no ccstream connector code, so what is
tested is the wire as a third-party client sees it. Time is injected (``FakeClock`` is the
server's steady clock) or scaled; the only real waits are stalls of a few hundred ms.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from simulator.cxone import CxFault, CxoneSimulator, CxSettings, CxTenant, parse_fault
from simulator.cxone import command as cxcommand
from simulator.cxone.faults import preset_schedule
from simulator.cxone.values import digest, iso_ms, parse_iso_ms

T0 = 1_800_000_000.0
KEY, SECRET, APP, APP_SECRET = "AK1", "s3cret", "app", "appsecret"
TENANT = CxTenant("acme", access_key_id=KEY, access_key_secret=SECRET, client_id=APP,
                  client_secret=APP_SECRET, agents=6, skills=3)
OTHER = CxTenant("globex", access_key_id="AK2", access_key_secret="pw2", client_id="app2",
                 client_secret="appsecret2")
ENDPOINTS = ("agents/states", "contacts/active", "skills/activity")
LISTS = {"agents/states": "agentStates", "contacts/active": "activeContacts",
         "skills/activity": "skillActivity"}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ZERO = {"early_request": 0, "expired_token": 0, "concurrent_poll": 0}


class FakeClock:
    """The server's steady clock, moved by hand."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _jwt(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.raw = status, headers, body

    @property
    def json(self) -> Any:
        return json.loads(self.raw)

    def rows(self, endpoint: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json["resultSet"][LISTS[endpoint]]
        return rows

    @property
    def poll_time(self) -> str:
        return str(self.json["resultSet"]["lastPollTime"])


class Client:
    """A plain CXone client: discovery, password grant, polls, completed pages."""

    def __init__(self, sim: CxoneSimulator, http: aiohttp.ClientSession) -> None:
        self.sim, self.http = sim, http
        self.token_url = ""
        self.issuer = ""
        self.api = ""
        self.access = ""

    async def call(self, method: str, url: str, timeout: float = 5.0, **kw: Any) -> Answer:
        async with self.http.request(method, url, timeout=aiohttp.ClientTimeout(total=timeout),
                                     **kw) as r:
            return Answer(r.status, r.headers, await r.read())

    async def discover(self) -> Answer:
        answer = await self.call("GET", self.sim.base_url + "/.well-known/openid-configuration")
        if answer.status == 200:
            self.token_url, self.issuer = answer.json["token_endpoint"], answer.json["issuer"]
        return answer

    async def token(self, **form: str) -> Answer:
        data = {"grant_type": "password", "username": KEY, "password": SECRET,
                "client_id": APP, "client_secret": APP_SECRET, **form}
        answer = await self.call("POST", self.token_url or self.sim.token_url, data=data)
        if answer.status == 200:
            self.access = answer.json["access_token"]
        return answer

    async def configuration(self, tenant: str = "acme") -> Answer:
        answer = await self.call("GET", (self.issuer or self.sim.base_url)
                                 + "/.well-known/cxone-configuration", params={"tenantId": tenant})
        if answer.status == 200:
            self.api = answer.json["api_endpoint"]
        return answer

    async def login(self) -> None:
        assert (await self.discover()).status == 200
        assert (await self.token()).status == 200
        assert (await self.configuration(_jwt(self.access)["tenantId"])).status == 200

    async def get(self, endpoint: str, params: dict[str, str] | None = None,
                  base: str | None = None, token: str | None = None, timeout: float = 5.0,
                  version: str = "v32.0", path: str = "incontactapi") -> Answer:
        url = f"{base if base is not None else self.api}/{path}/services/{version}/{endpoint}"
        headers = {"Accept": "application/json",
                   "Authorization": f"Bearer {token if token is not None else self.access}"}
        return await self.call("GET", url, timeout=timeout, params=params or {}, headers=headers)

    async def poll(self, endpoint: str, since: str | None = None, **kw: Any) -> Answer:
        since = since if since is not None else iso_ms(int((self.sim.steady() - 3600) * 1000))
        return await self.get(endpoint, {"updatedSince": since}, **kw)

    async def completed(self, start: str, end: str, skip: int = 0, top: int = 100) -> Answer:
        return await self.get("contacts/completed", {"startDate": start, "endDate": end,
                                                     "top": str(top), "skip": str(skip)})


def _settings(**overrides: Any) -> CxSettings:
    base: dict[str, Any] = {"tenants": (TENANT,), "seed": 3, "rate": 0.0}
    return CxSettings(**{**base, **overrides})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[CxoneSimulator]:
    async with CxoneSimulator(_settings(clock=clock)) as running:
        yield running


@pytest.fixture
async def client(sim: CxoneSimulator) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http:
        yield await _client_of(sim, http)


async def _client_of(sim: CxoneSimulator, http: aiohttp.ClientSession) -> Client:
    """A logged-in client, one second after the tenant's rows were made: with a frozen clock,
    a poll in the same ms as a change would (rightly, inclusive) return it again and again."""
    if isinstance(sim.settings.clock, FakeClock):
        sim.settings.clock.advance(1.0)
    c = Client(sim, http)
    await c.login()
    return c


# -- discovery and token (contract s.2) --------------------------------------------------------
async def test_discovery_token_and_configuration_point_back_to_one_port(client: Client) -> None:
    """openid-configuration -> token endpoint -> cxone-configuration, all on the simulator."""
    base = client.sim.base_url
    assert client.issuer == base and client.token_url == base + "/auth/token"
    answer = await client.configuration()
    assert answer.json["api_endpoint"] == base
    assert answer.json["area"] == "na1" and answer.json["domain"] == "niceincontact.com"
    assert (await client.configuration("nobody")).status == 404
    stats = client.sim.stats[KEY]
    assert stats.discovery_configuration == 2 and client.sim.openid_calls == 1


async def test_token_is_a_jwt_pair_with_exp_iat_tenant_and_scaled_lifetime(
        clock: FakeClock) -> None:
    """access_token and id_token are JWTs with exp, iat and tenantId; expires_in is scaled."""
    async with CxoneSimulator(_settings(clock=clock, time_scale=3600.0)) as sim, \
            aiohttp.ClientSession() as http:
        c = Client(sim, http)
        await c.discover()
        answer = await c.token()
        body = answer.json
        assert body["token_type"] == "Bearer" and body["expires_in"] == 1
        for token in (body["access_token"], body["id_token"]):
            claims = _jwt(token)
            assert claims["tenantId"] == "acme" and claims["iat"] == int(T0)
            assert claims["exp"] == pytest.approx(T0 + 1, abs=0.002)
        assert "refresh_token" not in body and sim.stats[KEY].tokens_issued == 1


@pytest.mark.parametrize(("form", "status", "error"), [
    ({"password": "wrong"}, 400, "invalid_grant"),
    ({"username": "AK9"}, 400, "invalid_grant"),
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"client_id": "app2", "client_secret": "appsecret2"}, 401, "invalid_client"),
    ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
])
async def test_token_refusals(sim: CxoneSimulator, form: dict[str, str], status: int,
                              error: str) -> None:
    """A bad access key is 400 invalid_grant, a bad (or another tenant's) app 401
    invalid_client."""
    async with aiohttp.ClientSession() as http:
        answer = await Client(sim, http).token(**form)
    assert answer.status == status and answer.json["error"] == error


# -- polling (contract s.3) --------------------------------------------------------------------
@pytest.mark.parametrize("path", ["incontactapi", "inContactAPI", "InContactAPI"])
async def test_api_path_is_matched_case_insensitively(client: Client, path: str) -> None:
    """Public code writes inContactAPI or InContactAPI; all are served."""
    answer = await client.get("agents/states", {"updatedSince": iso_ms(0)}, path=path)
    assert answer.status == 200


async def test_requests_without_a_good_token_path_or_version_are_refused(client: Client) -> None:
    """No token or an unknown one -> 401; an unknown endpoint or version -> 404."""
    assert (await client.poll("agents/states", token="nope")).status == 401
    assert (await client.get("agents/unknown")).status == 404
    assert (await client.get("agents/states", version="latest")).status == 404
    assert client.sim.stats["(unknown)"].invalid_token_requests == 1


async def test_all_three_endpoints_answer_last_poll_time_inside_result_set(client: Client) -> None:
    """lastPollTime is the server clock, ISO 8601 UTC ms, inside resultSet for all three."""
    client.sim.step(KEY, "start")  # contacts/active has a row to serve
    for endpoint in ENDPOINTS:
        answer = await client.poll(endpoint)
        assert answer.status == 200 and ISO_MS.match(answer.poll_time)
        assert answer.poll_time == iso_ms(int(client.sim.steady() * 1000))
        assert isinstance(answer.rows(endpoint), list)
        assert "Date" in answer.headers


async def test_updated_since_is_inclusive(client: Client, clock: FakeClock) -> None:
    """u equal to a row's lastUpdateTime returns that row; 1 ms later does not."""
    client.sim.step(KEY, "away")
    (row,) = (await client.poll("agents/states", iso_ms(int(clock() * 1000)))).rows(
        "agents/states")
    at = row["lastUpdateTime"]
    assert row in (await client.poll("agents/states", at)).rows("agents/states")
    later = iso_ms(parse_iso_ms(at) + 1)  # type: ignore[operator]
    assert (await client.poll("agents/states", later)).status == 304


async def test_not_modified_has_no_body(client: Client) -> None:
    """Nothing changed since u -> 304 with no body, and the Date header."""
    first = await client.poll("skills/activity")
    answer = await client.poll("skills/activity", first.poll_time)
    assert answer.status == 304 and answer.raw == b"" and "Date" in answer.headers
    assert client.sim.stats[KEY].not_modified >= 1


async def test_rows_are_served_only_in_their_current_state(client: Client,
                                                           clock: FakeClock) -> None:
    """Three changes of one agent between polls -> one row, its last state."""
    cursor = (await client.poll("agents/states")).poll_time
    clock.advance(1)
    for _ in range(3):
        client.sim.step(KEY, "away")
    rows = (await client.poll("agents/states", cursor)).rows("agents/states")
    assert len(rows) == len({r["agentId"] for r in rows})
    model = client.sim.model(KEY)
    assert all(model.current["agents/states"][str(r["agentId"])].row == r for r in rows)


async def test_last_update_time_is_server_now_and_strictly_increasing(client: Client,
                                                                      clock: FakeClock) -> None:
    """Each change stamps the server's now; a second change in the same ms gets +1 ms."""
    clock.advance(10)
    client.sim.step(KEY, "start")
    client.sim.step(KEY, "hold")
    since = iso_ms(int(clock() * 1000))
    (row,) = (await client.poll("contacts/active", since)).rows("contacts/active")
    start = (await client.poll("contacts/active", since)).rows("contacts/active")
    assert row["lastUpdateTime"] == iso_ms(int(clock() * 1000) + 1) == start[0]["lastUpdateTime"]
    assert row["contactStartDate"] == since


async def test_updated_since_older_than_retention_truncates(clock: FakeClock) -> None:
    """u older than retention (24 h, scaled) -> 200, full snapshot, X-Data-Truncated: true."""
    async with CxoneSimulator(_settings(clock=clock, time_scale=3600.0)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        fresh = await c.poll("agents/states", iso_ms(int((T0 - 23) * 1000)))
        assert "X-Data-Truncated" not in fresh.headers
        old = await c.poll("agents/states", iso_ms(int((T0 - 25) * 1000)))
        assert old.headers["X-Data-Truncated"] == "true"
        assert len(old.rows("agents/states")) == TENANT.agents
        assert sim.stats[KEY].truncations == 1


async def test_unreadable_updated_since_is_400(client: Client) -> None:
    """An updatedSince that is not ISO 8601 is refused, not taken as epoch."""
    assert (await client.poll("agents/states", "yesterday")).status == 400


async def test_ended_contacts_leave_active_silently_and_complete_after_the_lag(
        client: Client, clock: FakeClock) -> None:
    """An ended contact has no row in contacts/active; completed lists it once its lag passed."""
    client.sim.step(KEY, "start")
    (row,) = (await client.poll("contacts/active")).rows("contacts/active")
    cursor = (await client.poll("contacts/active")).poll_time
    clock.advance(1)
    client.sim.step(KEY, "end")
    after = await client.poll("contacts/active", cursor)
    assert after.status == 304
    window = (iso_ms(int((T0 - 60) * 1000)), iso_ms(int((T0 + 60) * 1000)))
    (done,) = client.sim.ledger.completed(KEY)
    clock.advance(client.sim.settings.completion_lag_s)
    page = await client.completed(*window)
    assert page.status == 200
    (listed,) = page.json["completedContacts"]
    assert listed["contactId"] == row["contactId"]
    assert listed["lastUpdateTime"] == iso_ms(done.completed_ms)
    assert done.visible_ms - done.completed_ms <= client.sim.settings.completion_lag_s * 1000


async def test_completion_is_invisible_until_its_lag_has_passed(clock: FakeClock) -> None:
    """With a lag, a just-completed contact is not listed yet (a 204), then it is."""
    async with CxoneSimulator(_settings(clock=clock, seed=11)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        sim.step(KEY, "start")
        sim.step(KEY, "end")
        (done,) = sim.ledger.completed(KEY)
        window = (iso_ms(done.completed_ms), iso_ms(done.completed_ms))
        lag_s = (done.visible_ms - done.completed_ms) / 1000
        assert lag_s > 0
        assert (await c.completed(*window)).status == 204
        clock.advance(lag_s + 0.001)
        assert len((await c.completed(*window)).json["completedContacts"]) == 1


async def test_completed_pages_by_skip_with_total_links_and_204(clock: FakeClock) -> None:
    """top/skip pages in completion order, inclusive range, totalRecords, _links.next, 204."""
    async with CxoneSimulator(_settings(clock=clock, completion_lag_s=0.0, seed=2)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        while len(sim.ledger.completed(KEY)) < 230:
            clock.advance(0.01)
            sim.step(KEY)
        entries = sim.ledger.completed(KEY)
        start, end = iso_ms(entries[5].completed_ms), iso_ms(entries[224].completed_ms)
        rows, skip = [], 0
        while True:
            page = await c.completed(start, end, skip=skip)
            if page.status == 204:
                break
            body = page.json
            rows += body["completedContacts"]
            assert body["totalRecords"] == 220
            assert (body["_links"]["next"] is None) == (len(body["completedContacts"]) < 100)
            if len(body["completedContacts"]) < 100:
                break
            skip += 100
        assert [r["contactId"] for r in rows] == [int(e.contact_id) for e in entries[5:225]]
        assert (await c.completed(start, end, skip=1000)).status == 204
        assert (await c.get("contacts/completed", {"startDate": "x"})).status == 400


async def test_date_header_is_on_every_answer_and_follows_the_skewed_clock(
        clock: FakeClock) -> None:
    """Every answer (200, 304, 401, 404, token, discovery) carries Date on the server clock."""
    async with CxoneSimulator(_settings(clock=clock, clock_skew_s=3600.0)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        answers = [await c.discover(), await c.token(), await c.poll("agents/states"),
                   await c.poll("agents/states", token="bad"), await c.get("nope/nope")]
        first = await c.poll("skills/activity")
        answers.append(await c.poll("skills/activity", first.poll_time))
        assert [a.status for a in answers] == [200, 200, 200, 401, 404, 304]
        now = clock() + 3600
        for answer in answers:
            moment = parsedate_to_datetime(answer.headers["Date"])
            assert moment == datetime.fromtimestamp(int(now), UTC)
        assert first.poll_time == iso_ms(int(now * 1000))
        assert _jwt(c.access)["exp"] == int(now + 3600)


async def test_the_generator_changes_rows_at_the_configured_rate() -> None:
    """rate=100 changes/s: changes appear on their own; stop_generating stops them."""
    async with CxoneSimulator(_settings(rate=100.0)) as sim:
        await sim.wait_for(lambda s: s.model(KEY).changes >= 10, timeout=3)
        sim.stop_generating()
        await asyncio.sleep(0.1)
        before = sim.model(KEY).changes
        await asyncio.sleep(0.15)
        assert sim.model(KEY).changes == before


async def test_ledger_lists_versions_completed_and_outages_with_canonical_hashes(
        client: Client, clock: FakeClock) -> None:
    """/_sim/ledger: each served row's sha256 of canonical JSON, completed contacts, outages."""
    client.sim.step(KEY, "start")
    client.sim.step(KEY, "end")
    first = await client.poll("agents/states")
    clock.advance(20)
    await client.poll("agents/states", first.poll_time)
    ledger = (await client.call("GET", client.sim.base_url + "/_sim/ledger?rows=1")).json
    mine = ledger["access_keys"][KEY]
    hashes = {v["sha256"] for v in mine["versions"]}
    assert all(digest(row) in hashes for row in first.rows("agents/states"))
    for version in mine["versions"]:
        assert version["sha256"] == digest(version["row"])
        assert version["current_from"] == version["lastUpdateTime"]
    assert {"contactId", "completed_at", "sha256"} <= set(mine["completed"][0])
    (outage,) = mine["outages"]["agents/states"]
    assert outage["seconds"] == pytest.approx(20.0)
    assert outage["from"] == first.poll_time
    assert mine["answers"]["agents/states"]["count"] == 2


async def test_stats_and_fault_control_endpoints(client: Client) -> None:
    """/_sim/stats is the snapshot; POST /_sim/faults arms a JSON list, refuses a bad one."""
    stats = (await client.call("GET", client.sim.base_url + "/_sim/stats")).json
    assert stats["stats"][KEY]["tokens_issued"] == 1 and stats["rules"][KEY] == ZERO
    url = client.sim.base_url + "/_sim/faults"
    ok = await client.call("POST", url, json=[{"kind": "truncate", "access_key": KEY}])
    assert ok.status == 200 and ok.json == {"injected": 1}
    bad = await client.call("POST", url, json=[{"kind": "melt"}])
    assert bad.status == 400 and "unknown fault" in bad.json["error"]
    assert client.sim.snapshot()["armed_faults"][0]["kind"] == "truncate"


# -- faults (contract s.8) ---------------------------------------------------------------------
async def test_fault_discovery_error(client: Client) -> None:
    """The next COUNT discovery answers are 5xx, then discovery works again."""
    client.sim.inject(CxFault("discovery_error", count=2, status=502))
    assert (await client.discover()).status == 502
    assert (await client.configuration()).status == 502
    assert (await client.discover()).status == 200
    client.sim.inject(CxFault("discovery_error", step="configuration"))
    assert (await client.discover()).status == 200
    assert (await client.configuration()).status == 503


@pytest.mark.parametrize("status", [401, 404])
async def test_fault_area_move(client: Client, status: int) -> None:
    """cxone-configuration answers a new api_endpoint; the old base answers 401 (or 404)."""
    old = client.api
    client.sim.inject(CxFault("area_move", access_key=KEY, status=status))
    assert (await client.poll("agents/states", base=old)).status == status
    answer = await client.configuration()
    assert answer.json["area"] == "na2" and client.api != old
    assert client.api.startswith(client.sim.base_url)
    assert (await client.poll("agents/states")).status == 200
    assert client.sim.stats[KEY].wrong_base_requests == 1


@pytest.mark.parametrize(("status", "error"), [(400, "invalid_grant"), (401, "invalid_client"),
                                               (429, "too_many_requests"), (503, "server_error")])
async def test_fault_token_error_statuses(client: Client, clock: FakeClock, status: int,
                                          error: str) -> None:
    """The next token answer is the fault's status; 429 carries Retry-After."""
    client.sim.inject(CxFault("token_error", status=status, retry_after=3.0))
    answer = await client.token()
    assert answer.status == status and answer.json["error"] == error
    if status in (429, 503):
        assert answer.headers["Retry-After"] == "3"
    clock.advance(3)
    assert (await client.token()).status == 200


@pytest.mark.parametrize(("field", "value"), [("expires_in", 600.0), ("exp_s", 600.0)])
async def test_fault_token_error_shortens_a_lifetime(client: Client, field: str,
                                                     value: float) -> None:
    """A grant whose expires_in (or exp - iat) is shortened; the other stays 3600."""
    shortened: dict[str, Any] = {field: value}
    client.sim.inject(CxFault("token_error", **shortened))
    body = (await client.token()).json
    claims = _jwt(body["access_token"])
    if field == "expires_in":
        assert body["expires_in"] == 600 and claims["exp"] - claims["iat"] == 3600
    else:
        assert body["expires_in"] == 3600 and claims["exp"] - claims["iat"] == 600


async def test_fault_expire_token(client: Client) -> None:
    """The current token expires now: the next API call is 401 (not counted as a defect)."""
    client.sim.inject(CxFault("expire_token", access_key=KEY))
    assert (await client.poll("agents/states")).status == 401
    await client.token()
    assert (await client.poll("agents/states")).status == 200
    assert client.sim.stats[KEY].revoked_token_requests == 1
    assert client.sim.rules(KEY) == ZERO


async def test_fault_clock_skew(client: Client, clock: FakeClock) -> None:
    """The server clock jumps by S s (lastPollTime, Date, exp); a step back holds it."""
    client.sim.inject(CxFault("clock_skew", skew_s=120.0))
    now = clock() + 120
    answer = await client.poll("skills/activity")
    assert answer.poll_time == iso_ms(int(now * 1000))
    assert parsedate_to_datetime(answer.headers["Date"]).timestamp() == int(now)
    assert _jwt((await client.token()).json["access_token"])["iat"] == int(now)
    client.sim.inject(CxFault("clock_skew", skew_s=0.0))
    clock.advance(60)
    assert (await client.poll("skills/activity")).poll_time == iso_ms(int(now * 1000))
    clock.advance(61)
    assert (await client.poll("skills/activity")).poll_time == iso_ms(int((now + 1) * 1000))


async def test_fault_repeat_rows(client: Client) -> None:
    """Rows the client already had are sent again, unchanged (a 304 becomes a 200)."""
    first = await client.poll("agents/states")
    client.sim.inject(CxFault("repeat_rows", rows=2, endpoint="agents/states"))
    again = await client.poll("agents/states", first.poll_time)
    assert again.status == 200 and len(again.rows("agents/states")) == 2
    assert all(r in first.rows("agents/states") for r in again.rows("agents/states"))
    assert (await client.poll("agents/states", first.poll_time)).status == 304


async def test_fault_collapse(client: Client, clock: FakeClock) -> None:
    """Several transitions at once; a poll serves only the last state of each row."""
    cursor = (await client.poll("agents/states")).poll_time
    clock.advance(1)
    before = len(client.sim.ledger.versions(KEY, "agents/states"))
    client.sim.inject(CxFault("collapse", rows=2, transitions=3))
    made = client.sim.ledger.versions(KEY, "agents/states")[before:]
    assert len(made) == 6
    last = [v for v in made if v.current_to_ms is None]
    assert len(last) == 2 and all(v.current_to_ms == v.updated_ms + 1 or v in last for v in made)
    rows = (await client.poll("agents/states", cursor)).rows("agents/states")
    assert sorted(digest(r) for r in rows) == sorted(v.digest for v in last)


@pytest.mark.parametrize(("status", "retry_after"), [(429, 2.0), (429, None), (503, None)])
async def test_fault_rest_error(client: Client, clock: FakeClock, status: int,
                                retry_after: float | None) -> None:
    """The next API answer is 429 (Retry-After if given) or 5xx; the one after is served."""
    client.sim.inject(CxFault("rest_error", status=status, retry_after=retry_after))
    answer = await client.poll("skills/activity")
    assert answer.status == status
    assert answer.headers.get("Retry-After") == (None if retry_after is None else "2")
    clock.advance(2)
    assert (await client.poll("skills/activity")).status == 200
    assert client.sim.stats[KEY].polls["skills/activity"]["throttled" if status == 429
                                                           else "error"] == 1


async def test_fault_stall_holds_past_the_client_timeout(client: Client) -> None:
    """A stalled answer is held; a client giving up closes it and no answer is recorded."""
    client.sim.inject(CxFault("stall", duration_s=5.0, endpoint="agents/states"))
    with pytest.raises(TimeoutError):
        await client.poll("agents/states", timeout=0.2)
    await client.sim.wait_for(lambda s: s.stats[KEY].abandoned == 1, timeout=2)
    assert client.sim.ledger.answers(KEY, "agents/states") == []
    client.sim.inject(CxFault("stall", duration_s=0.2))
    answer = await client.poll("skills/activity")
    assert answer.status == 200 and client.sim.stats[KEY].stalls == 2


async def test_fault_truncate(client: Client) -> None:
    """The next poll is treated as older than retention: snapshot + X-Data-Truncated."""
    first = await client.poll("agents/states")
    client.sim.inject(CxFault("truncate", access_key=KEY))
    answer = await client.poll("agents/states", first.poll_time)
    assert answer.headers["X-Data-Truncated"] == "true"
    assert len(answer.rows("agents/states")) == TENANT.agents


async def test_fault_completed_shift(clock: FakeClock) -> None:
    """Rows are inserted between pages: the next page repeats rows, none is missed."""
    async with CxoneSimulator(_settings(clock=clock, completion_lag_s=0.0)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        while len(sim.ledger.completed(KEY)) < 150:
            clock.advance(0.01)
            sim.step(KEY)
        window = (iso_ms(0), iso_ms(int((clock() + 1) * 1000)))
        sim.inject(CxFault("completed_shift", rows=4))
        first = (await c.completed(*window)).json
        second = (await c.completed(*window, skip=100)).json
        ids = [r["contactId"] for r in first["completedContacts"] + second["completedContacts"]]
        assert second["totalRecords"] == first["totalRecords"] + 4
        assert len(ids) - len(set(ids)) == 4
        assert set(ids) == {int(e.contact_id) for e in sim.ledger.completed(KEY)}
        assert sim.stats[KEY].relisted_rows == 4


async def test_faults_arm_at_their_time() -> None:
    """A fault with at_s is armed that long after start (real seconds)."""
    async with CxoneSimulator(_settings()) as sim:
        sim.inject(CxFault("truncate", at_s=0.15))
        assert sim.board.pending() == []
        await sim.wait_for(lambda s: bool(s.board.pending()), timeout=2)


async def test_presets_draw_the_same_faults_for_the_same_seed() -> None:
    """A preset is a seeded schedule: the same seed injects the same faults."""
    import random

    async with CxoneSimulator(_settings(preset="chaos", preset_interval_s=0.01,
                                        tenants=(TENANT, OTHER))) as sim:
        await sim.wait_for(lambda s: len(s.injected) >= 8, timeout=3)
        got = [f.to_dict() for f in sim.injected[:8]]
    expected = preset_schedule("chaos", random.Random("cxone-preset:chaos:3"), ["AK1", "AK2"],
                               0.01)
    assert got == [{k: v for k, v in next(expected).to_dict().items() if k != "at_s"}
                   for _ in range(8)]


# -- client rules (contract s.9) ---------------------------------------------------------------
@pytest.mark.parametrize("then", ["poll", "token", "completed"])
async def test_rule_early_request_after_a_429(client: Client, clock: FakeClock, then: str) -> None:
    """Any request of the key (API base or token endpoint) before 429 + Retry-After counts."""
    client.sim.inject(CxFault("rest_error", status=429, retry_after=2.0))
    assert (await client.poll("agents/states")).status == 429
    assert client.sim.rules(KEY)["early_request"] == 0
    clock.advance(1.9)
    if then == "poll":
        await client.poll("skills/activity")
    elif then == "token":
        await client.token()
    else:
        await client.completed(iso_ms(0), iso_ms(1))
    assert client.sim.rules(KEY) == {**ZERO, "early_request": 1}


async def test_rule_early_request_after_a_token_429(client: Client, clock: FakeClock) -> None:
    """A 429 from the token endpoint holds the key's API requests too."""
    client.sim.inject(CxFault("token_error", status=429, retry_after=1.0))
    assert (await client.token()).status == 429
    clock.advance(0.5)
    await client.poll("agents/states")
    assert client.sim.rules(KEY)["early_request"] == 1
    clock.advance(0.5)
    await client.poll("agents/states")
    assert client.sim.rules(KEY)["early_request"] == 1


@pytest.mark.parametrize("shortened", [None, "expires_in", "exp_s"])
async def test_rule_expired_token(clock: FakeClock, shortened: str | None) -> None:
    """A request with a token past the earlier of exp and issue + expires_in counts."""
    async with CxoneSimulator(_settings(clock=clock)) as sim, aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        lifetime = 3600.0
        if shortened:
            sim.inject(parse_fault({"kind": "token_error", shortened: 600.0}))
            await c.token()
            lifetime = 600.0
        clock.advance(lifetime - 1)
        assert (await c.poll("agents/states")).status == 200
        assert sim.rules(KEY)["expired_token"] == 0
        clock.advance(1)
        assert (await c.poll("agents/states")).status == 401
        assert sim.rules(KEY) == {**ZERO, "expired_token": 1}


async def test_rule_concurrent_poll(client: Client) -> None:
    """A second poll of one endpoint while the first is in flight counts once."""
    client.sim.inject(CxFault("stall", duration_s=0.3, endpoint="agents/states"))
    held = asyncio.create_task(client.poll("agents/states"))
    await client.sim.wait_for(lambda s: s.rule_book.in_flight(KEY, "agents/states") == 1)
    assert (await client.poll("skills/activity")).status == 200  # another endpoint: fine
    assert (await client.poll("agents/states")).status == 200
    assert (await held).status == 200
    assert client.sim.rules(KEY) == {**ZERO, "concurrent_poll": 1}


async def test_a_closed_connection_ends_the_poll_in_flight(client: Client) -> None:
    """A poll abandoned by closing its connection is over: polling again at once is fine."""
    client.sim.inject(CxFault("stall", duration_s=5.0))
    with pytest.raises(TimeoutError):
        await client.poll("agents/states", timeout=0.1)
    assert (await client.poll("agents/states")).status == 200
    await client.sim.wait_for(lambda s: s.stats[KEY].abandoned == 1, timeout=2)
    assert client.sim.rules(KEY) == ZERO


async def test_a_well_behaved_client_breaks_no_rule(clock: FakeClock) -> None:
    """Discovery, grants before expiry, one poll per endpoint at a time, Retry-After obeyed,
    401 -> new token -> rediscover, stalls abandoned: every rule count stays 0."""
    async with CxoneSimulator(_settings(clock=clock, time_scale=3600.0, rate=0.0)) as sim, \
            aiohttp.ClientSession() as http:
        c = await _client_of(sim, http)
        cursors = {e: iso_ms(int((clock() - 3600) * 1000)) for e in ENDPOINTS}
        issued = clock()

        async def poll_all() -> None:
            nonlocal issued
            for endpoint in ENDPOINTS:
                answer = await c.poll(endpoint, cursors[endpoint])
                if answer.status == 429:
                    clock.advance(float(answer.headers.get("Retry-After", "1")))
                    if clock() - issued > 0.4:
                        await grant()
                    answer = await c.poll(endpoint, cursors[endpoint])
                if answer.status == 401:  # new token, retry; 401 again -> rediscover, retry
                    await grant()
                    answer = await c.poll(endpoint, cursors[endpoint])
                if answer.status in (401, 404):  # 404: rediscover once
                    await c.login()
                    issued = clock()
                    answer = await c.poll(endpoint, cursors[endpoint])
                assert answer.status in (200, 304), (endpoint, answer.status)
                if answer.status == 200:
                    cursors[endpoint] = answer.poll_time

        async def grant() -> None:
            nonlocal issued
            assert (await c.token()).status == 200
            issued = clock()

        for fault in (CxFault("rest_error", status=429, retry_after=1.0),
                      CxFault("expire_token"), CxFault("area_move"),
                      CxFault("area_move", status=404), CxFault("repeat_rows"),
                      CxFault("collapse"), CxFault("truncate"), CxFault("clock_skew", skew_s=5)):
            sim.inject(fault)
            sim.step(KEY, n=5)
            clock.advance(0.3)
            if clock() - issued > 0.4:   # less than half the 1 s lifetime left: a new grant
                await grant()
            await poll_all()
        sim.inject(CxFault("stall", duration_s=5.0))
        with pytest.raises(TimeoutError):
            await c.poll("agents/states", cursors["agents/states"], timeout=0.1)
        await poll_all()
        assert sim.rules(KEY) == ZERO
        stats = sim.stats[KEY]
        assert stats.throttled == 1 and stats.revoked_token_requests == 1
        assert stats.wrong_base_requests >= 2 and stats.faults["truncate"] == 1
        # the first poll of each endpoint (now - 1 h) is older than the scaled retention (24 s)
        assert stats.truncations == 3 + 1


# -- the command -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for name, default, kind in (("--host", "127.0.0.1", str), ("--port", 0, int),
                                ("--seed", 0, int), ("--rate", 5.0, float),
                                ("--duration", None, float), ("--time-scale", 1.0, float),
                                ("--faults", None, str), ("--platform", "cxone", str)):
        parser.add_argument(name, default=default, type=kind)
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--client", action="append", default=[])
    cxcommand.add_arguments(parser)
    return parser


def test_command_prints_a_streams_snippet_and_serves_until_its_duration(tmp_path: Path) -> None:
    """``main`` prints the URLs and a [[streams]] block per access key, then stops on time."""
    script = ("import sys, tests.component.test_sim_cxone as t; from simulator.cxone import "
              "command; sys.exit(command.main(t._parser().parse_args(sys.argv[1:])))")
    done = subprocess.run(
        [sys.executable, "-c", script, "--duration", "0.5", "--client", "KEY1:pw1",
         "--client", "KEY2:pw2", "--faults", "chaos", "--fault", "kind=truncate"],
        capture_output=True, text=True, timeout=30, cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0, done.stderr
    # logs share stdout (the CLI contract keeps stderr for the exit line): the rest is TOML
    snippet = [line for line in done.stdout.splitlines()
               if not re.match(r"^\d\d:\d\d:\d\d", line)]
    doc = tomllib.loads("\n".join(snippet))
    first, second = doc["streams"]
    assert first["platform"] == "cxone" and first["access_key_id"] == "KEY1"
    assert first["discovery_url"].startswith("http://127.0.0.1:")
    assert {"name", "access_key_secret_env", "client_id", "client_secret_env"} <= set(first)
    assert second["name"] == "cxone-demo2"
    assert "openid-configuration" in done.stdout and "/_sim/faults" in done.stdout


def test_command_refuses_a_bad_fault_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --fault is one line on stderr and exit 2, before anything is served."""
    args = _parser().parse_args(["--fault", "kind=stall,status=7"])
    assert cxcommand.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "status" in err[0]
