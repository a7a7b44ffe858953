"""The simulator serves docs/protocols.md: one test per row of the contract's tables.

Clients here are plain aiohttp (token endpoint) and plain ``websockets`` (streams): no ccstream
code, so that what is tested is the wire, exactly as a third-party client would see it.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from simulator import ClientSpec, Fault, SimSettings, Simulator

Token = Callable[..., Awaitable[str]]
ID, SECRET = "acme", "s3cret-acme"


def _settings(**overrides: Any) -> SimSettings:
    base: dict[str, Any] = {"clients": (ClientSpec(ID, SECRET),), "seed": 3, "rate": 0.0,
                            "duplicate_rate": 0.0}
    return SimSettings(**{**base, **overrides})


async def _token_call(sim: Simulator, data: dict[str, str], client: str = ID,
                      secret: str = SECRET) -> tuple[int, dict[str, str], dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        answer = await http.post(
            sim.token_url, data=data,
            headers={"Authorization": aiohttp.encode_basic_auth(client, secret)})
        return answer.status, dict(answer.headers), await answer.json()


def _claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _url(sim: Simulator, platform: str, token: str, **params: str) -> str:
    return f"{sim.stream_url(platform)}?{urlencode({'access_token': token, **params})}"  # type: ignore[arg-type]


def _open(url: str) -> Any:
    # the contract's client pings are tested on their own; elsewhere no pings, no size limit
    return connect(url, ping_interval=None, max_size=None, open_timeout=5, close_timeout=2)


async def _status(url: str) -> tuple[int, Any]:
    with pytest.raises(InvalidStatus) as info:
        async with _open(url):
            pass
    response = info.value.response
    return response.status_code, response.headers


async def _frames(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [json.loads(await ws.recv()) for _ in range(count)]


async def _close_of(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    return info.value


# -- 1. token endpoint ------------------------------------------------------------------------
async def test_client_credentials_grant_answers_a_jwt_with_exp_and_iat() -> None:
    """grant_type=client_credentials answers bearer JWT, expires_in and a refresh token."""
    async with Simulator(_settings(token_lifetime_s=120.0)) as sim:
        status, _, body = await _token_call(sim, {"grant_type": "client_credentials"})
    assert status == 200
    assert body["token_type"] == "bearer" and body["expires_in"] == 120
    assert body["access_token"].count(".") == 2 and body["refresh_token"]
    claims = _claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == pytest.approx(120, abs=1)


async def test_refresh_grant_rotates_and_the_old_refresh_token_is_invalid_grant() -> None:
    """A refresh grant answers a new refresh token; presenting the old one again is 400."""
    async with Simulator(_settings()) as sim:
        _, _, first = await _token_call(sim, {"grant_type": "client_credentials"})
        refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
        status, _, second = await _token_call(sim, refresh)
        assert status == 200 and second["refresh_token"] != first["refresh_token"]
        status, _, again = await _token_call(sim, refresh)
        assert (status, again) == (400, {"error": "invalid_grant"})
        assert sim.stats[ID].token_grants == {"client_credentials": 1, "refresh_token": 1}


async def test_default_token_lifetimes_are_two_hours_genesys_one_hour_nice() -> None:
    """Without a configured lifetime, a Genesys client gets 7200 s and a NICE client 3600 s."""
    clients = (ClientSpec("g", "pw", platforms=("genesys",)), ClientSpec("n", "pw", ("nice",)))
    async with Simulator(_settings(clients=clients)) as sim:
        _, _, genesys = await _token_call(sim, {"grant_type": "client_credentials"}, "g", "pw")
        _, _, nice = await _token_call(sim, {"grant_type": "client_credentials"}, "n", "pw")
    assert (genesys["expires_in"], nice["expires_in"]) == (7200, 3600)


async def test_wrong_credentials_answer_401_invalid_client() -> None:
    """A wrong secret, or an unknown client, is 401 invalid_client."""
    async with Simulator(_settings()) as sim:
        wrong = await _token_call(sim, {"grant_type": "client_credentials"}, ID, "nope")
        unknown = await _token_call(sim, {"grant_type": "client_credentials"}, "who", "x")
        assert sim.stats[ID].token_errors == {401: 1}
    assert (wrong[0], wrong[2]) == (401, {"error": "invalid_client"})
    assert unknown[0] == 401


async def test_token_429_carries_retry_after_and_early_retries_are_counted() -> None:
    """429 has Retry-After; a request before it elapsed is counted as early."""
    async with Simulator(_settings()) as sim:
        sim.inject(Fault(kind="token_error", status=429, retry_after=2))
        status, headers, _ = await _token_call(sim, {"grant_type": "client_credentials"})
        assert (status, headers["Retry-After"]) == (429, "2")
        status, _, _ = await _token_call(sim, {"grant_type": "client_credentials"})
        assert status == 200
        assert sim.stats[ID].early_token_requests == 1 and sim.stats[ID].early_attempts == 1


async def test_token_5xx_is_served() -> None:
    """A scripted 5xx answers the next token request, then the endpoint works again."""
    async with Simulator(_settings()) as sim:
        sim.inject(Fault(kind="token_error", status=503, count=2))
        answers = [(await _token_call(sim, {"grant_type": "client_credentials"}))[0]
                   for _ in range(3)]
        assert answers == [503, 503, 200]
        assert sim.stats[ID].token_errors == {503: 2}


async def test_clock_skew_moves_exp_and_iat_but_not_the_lifetime() -> None:
    """With the server clock 5 minutes ahead, iat is 5 minutes ahead of the client's clock."""
    async with Simulator(_settings(clock_skew_s=300.0, token_lifetime_s=60.0)) as sim:
        _, _, body = await _token_call(sim, {"grant_type": "client_credentials"})
    claims = _claims(body["access_token"])
    assert claims["iat"] - time.time() == pytest.approx(300, abs=5)
    assert claims["exp"] - claims["iat"] == pytest.approx(60, abs=1)


# -- 2. handshake answers ---------------------------------------------------------------------
@pytest.mark.parametrize("platform", ["genesys", "nice"])
async def test_101_opens_the_stream(platform: str, sim_token: Token) -> None:
    """A valid token opens the stream on both endpoints and events flow."""
    async with Simulator(_settings(rate=200.0)) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, platform, token)) as ws:
            frames = await _frames(ws, 3)
        assert all(f["eventType"] for f in frames)
        assert sim.stats[ID].handshakes_opened == 1


async def test_handshake_with_an_expired_token_is_401_and_counted(sim_token: Token) -> None:
    """An expired token is refused with 401 and counted as a handshake with an expired token."""
    now = [1_000_000.0]
    async with Simulator(_settings(token_lifetime_s=10.0, clock=lambda: now[0])) as sim:
        token = await sim_token(sim, ID, SECRET)
        now[0] += 11
        status, _ = await _status(_url(sim, "genesys", token))
        assert status == 401
        assert sim.stats[ID].handshakes_expired_token == 1
        assert (await _status(_url(sim, "genesys", "garbage")))[0] == 401


async def test_handshake_403_when_the_client_lacks_the_platform(sim_token: Token) -> None:
    """A client allowed only on NICE is refused on the Genesys endpoint with 403."""
    async with Simulator(_settings(clients=(ClientSpec(ID, SECRET, ("nice",)),))) as sim:
        token = await sim_token(sim, ID, SECRET)
        status, _ = await _status(_url(sim, "genesys", token))
        assert status == 403 and sim.stats[ID].handshake_rejections == {403: 1}


async def test_handshake_429_beyond_the_connection_limit(sim_token: Token) -> None:
    """Beyond max_connections the handshake is 429 with Retry-After; early retries count."""
    async with Simulator(_settings(max_connections=1, limit_retry_after_s=3.0)) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)):
            status, headers = await _status(_url(sim, "nice", token))
            assert (status, headers["Retry-After"]) == (429, "3")
            await _status(_url(sim, "nice", token))
        assert sim.stats[ID].early_handshakes == 1


async def test_limit_answer_1013_opens_then_closes_with_retry_after(sim_token: Token) -> None:
    """With limit_answer=1013, the extra connection is closed 1013 {"retry_after": s}."""
    settings = _settings(max_connections=1, limit_answer="1013", limit_retry_after_s=2.0)
    async with Simulator(settings) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)), _open(_url(sim, "genesys", token)) as ws:
            closed = await _close_of(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1013
        assert json.loads(closed.rcvd.reason) == {"retry_after": 2.0}


async def test_handshake_503_during_maintenance(sim_token: Token) -> None:
    """During a maintenance window the handshake is 503 with Retry-After."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.inject(Fault(kind="maintenance", duration_s=30, retry_after=30))
        status, headers = await _status(_url(sim, "nice", token))
        assert status == 503 and int(headers["Retry-After"]) >= 29


@pytest.mark.parametrize("platform", ["genesys", "nice"])
async def test_types_filter_sends_only_the_listed_types(platform: str, sim_token: Token) -> None:
    """types=a,b: only events of those types reach the connection."""
    async with Simulator(_settings()) as sim:
        wanted = sim.settings.event_types(platform)[:2]  # type: ignore[arg-type]
        url = _url(sim, platform, await sim_token(sim, ID, SECRET), types=",".join(wanted))
        async with _open(url) as ws:
            sim.emit(platform, ID, 200)  # type: ignore[arg-type]
            expected = sum(1 for e in sim.streams[platform, ID].log.batch(0, 200)  # type: ignore[index]
                           if e.event_type in wanted)
            frames = await _frames(ws, expected)
        assert expected > 0 and {f["eventType"] for f in frames} <= set(wanted)
        assert sim.stats[ID].events_sent == expected


# -- 2. frames --------------------------------------------------------------------------------
async def test_genesys_event_frames_have_the_contract_keys(sim_token: Token) -> None:
    """Genesys events are {eventType, correlationId, timestamp, eventBody}, text, one object."""
    async with (
        Simulator(_settings(rate=200.0)) as sim,
        _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws,
    ):
        raw = await ws.recv()
    assert isinstance(raw, str)
    frame = json.loads(raw)
    assert set(frame) == {"eventType", "correlationId", "timestamp", "eventBody"}
    assert frame["timestamp"].endswith("Z") and len(frame["timestamp"]) == 24


async def test_nice_event_frames_have_the_contract_keys(sim_token: Token) -> None:
    """NICE events are {eventId, eventType, correlationId, timestamp, cursor, data}."""
    async with (
        Simulator(_settings(rate=200.0)) as sim,
        _open(_url(sim, "nice", await sim_token(sim, ID, SECRET))) as ws,
    ):
        frame = json.loads(await ws.recv())
    assert set(frame) == {"eventId", "eventType", "correlationId", "timestamp", "cursor", "data"}


async def test_heartbeats_are_sent_and_are_not_events(sim_token: Token) -> None:
    """A heartbeat frame {eventType: system.heartbeat, timestamp} comes every heartbeat_s."""
    async with (
        Simulator(_settings(heartbeat_s=30.0, time_scale=100.0, ping_window_s=600.0)) as sim,
        _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws,
    ):
        frame = json.loads(await ws.recv())
        assert set(frame) == {"eventType", "timestamp"}
        assert frame["eventType"] == "system.heartbeat"
        assert sim.ledger.total() == 0 and sim.stats[ID].heartbeats_sent >= 1


async def test_closing_notice_precedes_the_close(sim_token: Token) -> None:
    """system.socket_closing comes first, then the server closes within the notice delay."""
    async with (
        Simulator(_settings()) as sim,
        _open(_url(sim, "nice", await sim_token(sim, ID, SECRET))) as ws,
    ):
        sim.inject(Fault(kind="closing_notice", delay_s=0.2, code=1001))
        frame = json.loads(await ws.recv())
        assert frame["eventType"] == "system.socket_closing"
        closed = await _close_of(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1001


# -- 2. resumption ----------------------------------------------------------------------------
async def test_genesys_since_replays_inclusively_then_goes_live(sim_token: Token) -> None:
    """since=T replays every retained event with timestamp >= T, the one at T included."""
    now = [1_700_000_000.0]
    async with Simulator(_settings(clock=lambda: now[0])) as sim:
        token = await sim_token(sim, ID, SECRET)
        for _ in range(20):
            now[0] += 0.01
            sim.emit("genesys", ID, 1)
        stream = sim.streams["genesys", ID]
        tenth = stream.log.get(10)
        assert tenth is not None
        since = tenth.key.split("|")[2]
        expected = [e.key for e in stream.log.batch(10, 100)]
        async with _open(_url(sim, "genesys", token, since=since)) as ws:
            replay = await _frames(ws, len(expected))
            now[0] += 0.01
            sim.emit("genesys", ID, 1)
            live = (await _frames(ws, 1))[0]
    keys = [f"{f['eventType']}|{f['correlationId']}|{f['timestamp']}" for f in replay]
    assert keys == expected and keys[0] == tenth.key and len(keys) == 10
    assert live["timestamp"] > keys[-1].split("|")[2]


async def test_nice_cursor_replays_after_c_and_may_resend_at_or_before(sim_token: Token) -> None:
    """cursor=C replays every event after C; anything re-sent is at or before C."""
    async with Simulator(_settings(nice_rewind_max=3, seed=11)) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.emit("nice", ID, 30)
        cursor_event = sim.streams["nice", ID].log.get(14)
        assert cursor_event is not None
        cursor = json.loads(cursor_event.frame)["cursor"]
        async with _open(_url(sim, "nice", token, cursor=cursor)) as ws:
            first = await _frames(ws, 1)
            rewind = 15 - int(first[0]["eventId"].split("-")[1])
            rest = await _frames(ws, 30 - 15 + rewind - 1)
    seqs = [int(f["eventId"].split("-")[1]) for f in first + rest]
    assert [s for s in seqs if s > 14] == list(range(15, 30))
    assert all(s <= 14 for s in seqs[:rewind]) and 0 <= rewind <= 3


async def test_resume_older_than_retention_replays_from_the_oldest_retained(
        sim_token: Token) -> None:
    """A since older than retention starts at the oldest retained event, later than since."""
    async with Simulator(_settings(retention_events=5)) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.emit("genesys", ID, 1)
        since = sim.streams["genesys", ID].log.get(0).key.split("|")[2]  # type: ignore[union-attr]
        sim.emit("genesys", ID, 9)
        async with _open(_url(sim, "genesys", token, since=since)) as ws:
            first = (await _frames(ws, 1))[0]
        assert sim.streams["genesys", ID].log.first_seq == 5
        oldest = sim.streams["genesys", ID].log.get(5)
        assert oldest is not None and first["correlationId"] == oldest.corr
        assert sim.stats[ID].gaps_served == 1


async def test_a_plain_client_consumes_resumes_and_sees_duplicates(sim_token: Token) -> None:
    """At least once: resuming with since loses nothing, and duplicates are seen."""
    async with Simulator(_settings(rate=300.0, duplicate_rate=0.3)) as sim:
        token = await sim_token(sim, ID, SECRET)
        seen: list[str] = []
        since = None
        for _ in range(3):
            params = {"since": since} if since else {}
            async with _open(_url(sim, "genesys", token, **params)) as ws:
                for frame in await _frames(ws, 60):
                    if frame["eventType"] != "system.heartbeat":
                        seen.append(f"{frame['eventType']}|{frame['correlationId']}|"
                                    f"{frame['timestamp']}")
                        since = frame["timestamp"]
        assert len(seen) > len(set(seen))
        # nothing emitted before the last resume point was missed, nothing seen is unknown
        emitted = sim.ledger.stream("genesys", ID).order
        assert {k for k in emitted if k.split("|")[2] < str(since)} <= set(seen)
        assert set(seen) <= set(emitted)
        assert sim.stats[ID].duplicates_sent > 0


# -- 2. closing -------------------------------------------------------------------------------
@pytest.mark.parametrize(("code", "reason"), [
    (1000, "token_expired"), (1000, "unauthorized"), (1000, None), (1001, None),
    (1008, None), (1011, None), (1012, None), (1014, None),
])
async def test_close_codes_of_the_contract(code: int, reason: str | None,
                                           sim_token: Token) -> None:
    """Each close of the contract's table reaches a plain client with its code and payload."""
    async with (
        Simulator(_settings()) as sim,
        _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws,
    ):
        sim.inject(Fault(kind="close", code=code, reason=reason))
        closed = await _close_of(ws)
        assert closed.rcvd is not None and closed.rcvd.code == code
        if reason:
            assert json.loads(closed.rcvd.reason) == {"error": reason}
        assert sim.stats[ID].closes_sent == {code: 1}


async def test_close_1013_carries_retry_after_and_early_reconnects_count(
        sim_token: Token) -> None:
    """1013 has reason {"retry_after": s}; reconnecting sooner is counted as early."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)) as ws:
            sim.inject(Fault(kind="close", code=1013, retry_after=5))
            closed = await _close_of(ws)
        assert closed.rcvd is not None and json.loads(closed.rcvd.reason) == {"retry_after": 5.0}
        async with _open(_url(sim, "genesys", token)):
            pass
        assert sim.stats[ID].early_handshakes == 1


async def test_token_expiry_closes_open_connections_with_1008(sim_token: Token) -> None:
    """When the token of an open connection expires, the server closes it with 1008."""
    async with (
        Simulator(_settings(token_lifetime_s=0.5)) as sim,
        _open(_url(sim, "nice", await sim_token(sim, ID, SECRET))) as ws,
    ):
        closed = await _close_of(ws)
    assert closed.rcvd is not None and closed.rcvd.code == 1008


async def test_reusing_a_token_after_an_auth_close_is_refused_and_counted(
        sim_token: Token) -> None:
    """After an auth close the token is dead: reconnecting with it is 401 and a defect count."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)) as ws:
            sim.inject(Fault(kind="close", code=1000, reason="unauthorized"))
            await _close_of(ws)
        assert (await _status(_url(sim, "genesys", token)))[0] == 401
        assert sim.stats[ID].handshakes_expired_token == 1


@pytest.mark.parametrize(("platform", "window"), [("genesys", 15.0), ("nice", 30.0)])
async def test_client_without_pings_is_dropped_without_a_close_frame(
        platform: str, window: float, sim_token: Token) -> None:
    """No ping within the platform's window (15 s / 30 s): dropped with no close frame."""
    async with Simulator(_settings(time_scale=100.0)) as sim:  # windows: 0.15 s / 0.3 s
        async with _open(_url(sim, platform, await sim_token(sim, ID, SECRET))) as ws:
            closed = await _close_of(ws)
        assert closed.rcvd is None
        assert sim.stats[ID].drops == {"idle": 1}
        assert sim.settings.ping_window(platform) == window / 100  # type: ignore[arg-type]


async def test_pings_are_answered_and_keep_the_connection(sim_token: Token) -> None:
    """A client pinging within the window gets pongs and is not dropped."""
    async with Simulator(_settings(time_scale=50.0)) as sim:
        url = _url(sim, "genesys", await sim_token(sim, ID, SECRET))
        async with connect(url, ping_interval=0.1, ping_timeout=2) as ws:
            await sim.wait_for(lambda s: s.stats[ID].pongs >= 5, timeout=5)
            await ws.close(1000, "Graceful shutdown")
        await sim.wait_for(lambda s: s.stats[ID].close_codes == {1000: 1}, timeout=2)
        assert not sim.stats[ID].drops


async def test_stats_and_ledger_are_served_over_http(sim_token: Token) -> None:
    """GET /_sim/stats and /_sim/ledger answer the in-process counters and ledger as JSON."""
    async with (
        Simulator(_settings(rate=200.0)) as sim,
        _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws,
    ):
        await _frames(ws, 5)
        async with aiohttp.ClientSession() as http:
            stats = await (await http.get(f"{sim.base_url}/_sim/stats")).json()
            ledger = await (await http.get(f"{sim.base_url}/_sim/ledger")).json()
        assert stats["clients"][ID]["handshakes_opened"] == 1
        emitted = ledger["streams"][f"genesys/{ID}"]
        assert set(emitted["events"]) == sim.ledger.keys("genesys", ID)
        assert len(emitted["order"]) == emitted["count"] >= 5


async def test_stop_generating_ends_live_events_but_keeps_replay(sim_token: Token) -> None:
    """After stop_generating no new event is made, and what is retained still replays."""
    async with Simulator(_settings(rate=500.0)) as sim:
        await sim.wait_for(lambda s: s.streams["genesys", ID].log.next_seq >= 20)
        sim.stop_generating()
        made = sim.streams["genesys", ID].log.next_seq
        oldest = sim.streams["genesys", ID].log.oldest()
        assert oldest is not None
        since = oldest.key.split("|")[2]
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET), since=since)) as ws:
            replayed = await _frames(ws, made)
        assert len(replayed) == made == sim.streams["genesys", ID].log.next_seq
