"""Every fault of the catalogue is injected on loopback and is observable in the counters.

Clients are plain ``websockets``/aiohttp, no ccstream code.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from simulator import ClientSpec, Fault, SimSettings, Simulator
from simulator.faults import preset_schedule

Token = Callable[..., Awaitable[str]]
ID, SECRET = "acme", "s3cret-acme"


def _settings(**overrides: Any) -> SimSettings:
    base: dict[str, Any] = {"clients": (ClientSpec(ID, SECRET),), "seed": 5, "rate": 0.0,
                            "duplicate_rate": 0.0}
    return SimSettings(**{**base, **overrides})


def _url(sim: Simulator, platform: str, token: str, **params: str) -> str:
    return f"{sim.stream_url(platform)}?{urlencode({'access_token': token, **params})}"  # type: ignore[arg-type]


def _open(url: str, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"ping_interval": None, "max_size": None, "close_timeout": 1}
    return connect(url, **{**options, **kwargs})


async def _close_of(ws: ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await ws.recv()
    return info.value


async def _token_status(sim: Simulator, data: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as http:
        answer = await http.post(sim.token_url, data=data,
                                 headers={"Authorization": aiohttp.encode_basic_auth(ID, SECRET)})
        return answer.status


@pytest.mark.parametrize("status", [401, 403, 429, 503])
async def test_handshake_error_fault_answers_the_scripted_status(status: int,
                                                               sim_token: Token) -> None:
    """handshake_error answers the next handshake with its status, then the endpoint works."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.inject(Fault(kind="handshake_error", client=ID, status=status, retry_after=1))
        with pytest.raises(InvalidStatus) as info:
            async with _open(_url(sim, "nice", token)):
                pass
        assert info.value.response.status_code == status
        if status in (429, 503):
            assert info.value.response.headers["Retry-After"] == "1"
        async with _open(_url(sim, "nice", token)):
            pass
        stats = sim.stats[ID]
        assert stats.handshake_rejections == {status: 1} and stats.faults["handshake_error"] == 1


async def test_token_error_400_answers_refresh_grants_only() -> None:
    """invalid_grant is scripted for refresh grants: client credentials pass, refresh fails."""
    async with Simulator(_settings()) as sim:
        sim.inject(Fault(kind="token_error", status=400))
        assert await _token_status(sim, {"grant_type": "client_credentials"}) == 200
        assert await _token_status(sim, {"grant_type": "refresh_token",
                                         "refresh_token": "rt-whatever"}) == 400
        assert sim.stats[ID].faults["token_error"] == 1


async def test_token_error_401_is_invalid_client_even_with_good_credentials() -> None:
    """A scripted 401 answers invalid_client to a client with the right secret."""
    async with Simulator(_settings()) as sim:
        sim.inject(Fault(kind="token_error", status=401))
        assert await _token_status(sim, {"grant_type": "client_credentials"}) == 401
        assert sim.stats[ID].token_errors == {401: 1}


async def test_silent_drop_stops_pongs_and_events_then_drops(sim_token: Token) -> None:
    """A silent connection answers no ping and sends nothing, then ends with no close frame."""
    async with Simulator(_settings(rate=200.0)) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            await ws.recv()
            sim.inject(Fault(kind="silent", duration_s=0.5))
            await sim.wait_for(lambda s: s.stats[ID].faults["silent"] == 1)
            pong = await ws.ping()
            sent = sim.stats[ID].events_sent
            closed = await _close_of(ws)
            assert not pong.done() or pong.exception() is not None
        stats = sim.stats[ID]
        assert closed.rcvd is None and stats.drops == {"silent": 1}
        assert stats.pings == 1 and stats.pongs == 0 and stats.events_sent == sent


async def test_tcp_reset_drops_without_close_frame(sim_token: Token) -> None:
    """reset aborts the TCP connection: the client sees no close frame."""
    async with Simulator(_settings()) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            sim.inject(Fault(kind="reset"))
            closed = await _close_of(ws)
        assert closed.rcvd is None and sim.stats[ID].drops == {"reset": 1}


async def test_stall_pauses_the_stream_but_not_the_pongs(sim_token: Token) -> None:
    """During a stall no event is sent while pings are still answered; then the backlog comes."""
    async with Simulator(_settings()) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            sim.inject(Fault(kind="stall", duration_s=0.6))
            await sim.wait_for(lambda s: s.stats[ID].faults["stall"] == 1)
            sim.emit("genesys", ID, 5)
            await (await ws.ping())
            assert sim.stats[ID].events_sent == 0 and sim.stats[ID].pongs == 1
            frames = [json.loads(await ws.recv()) for _ in range(5)]
        assert len(frames) == 5 and sim.stats[ID].events_sent == 5


@pytest.mark.parametrize("variant", ["not_json", "not_object", "missing_field", "binary",
                                     "oversized"])
async def test_malformed_frames_are_sent_as_scripted(variant: str, sim_token: Token) -> None:
    """Each malformed variant reaches the client as that kind of bad frame, then events go on."""
    async with Simulator(_settings(oversized_bytes=2_000_000)) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            sim.inject(Fault(kind="malformed", variant=variant, count=2))
            bad = [await ws.recv() for _ in range(2)]
            sim.emit("genesys", ID, 1)
            good = json.loads(await ws.recv())
        assert sim.stats[ID].malformed_sent == {variant: 2}
        assert "correlationId" in good
    frame = bad[0]
    if variant == "binary":
        assert isinstance(frame, bytes)
        return
    assert isinstance(frame, str)
    if variant == "not_json":
        with pytest.raises(json.JSONDecodeError):
            json.loads(frame)
    elif variant == "not_object":
        assert isinstance(json.loads(frame), list)
    elif variant == "missing_field":
        assert "correlationId" not in json.loads(frame)
    else:
        assert len(frame) > 2_000_000


async def test_malformed_invalid_utf8_text_frame(sim_token: Token) -> None:
    """An invalid-UTF-8 text frame is sent; a strict client fails it with 1007."""
    async with Simulator(_settings()) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            sim.inject(Fault(kind="malformed", variant="invalid_utf8"))
            closed = await _close_of(ws)
        assert closed.sent is not None and closed.sent.code == 1007
        assert sim.stats[ID].malformed_sent == {"invalid_utf8": 1}


async def test_expire_token_closes_with_1008_and_refuses_the_old_token(sim_token: Token) -> None:
    """expire_token revokes the tokens: open connections close 1008, reuse is a counted 401."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)) as ws:
            sim.inject(Fault(kind="expire_token", client=ID))
            closed = await _close_of(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1008
        with pytest.raises(InvalidStatus):
            async with _open(_url(sim, "genesys", token)):
                pass
        fresh = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", fresh)):
            pass
        assert sim.stats[ID].handshakes_expired_token == 1


async def test_purge_makes_the_resume_point_older_than_retention(sim_token: Token) -> None:
    """After purge, a resume from an early cursor is a gap: it starts at the oldest retained."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.emit("nice", ID, 10)
        first = sim.streams["nice", ID].log.get(0)
        assert first is not None
        cursor = json.loads(first.frame)["cursor"]
        sim.inject(Fault(kind="purge", platform="nice", keep=3))
        async with _open(_url(sim, "nice", token, cursor=cursor)) as ws:
            frame = json.loads(await ws.recv())
        assert frame["eventId"].endswith("-7") and sim.stats[ID].gaps_served == 1


async def test_mass_disconnect_closes_every_connection_at_once(sim_token: Token) -> None:
    """mass_disconnect closes every open connection, here with 1012."""
    clients = (ClientSpec(ID, SECRET), ClientSpec("other", "pw"))
    async with Simulator(_settings(clients=clients)) as sim:
        urls = [_url(sim, "genesys", await sim_token(sim, ID, SECRET)),
                _url(sim, "nice", await sim_token(sim, "other", "pw"))]
        async with _open(urls[0]) as a, _open(urls[1]) as b:
            sim.inject(Fault(kind="mass_disconnect", code=1012))
            codes = [(await _close_of(ws)).rcvd for ws in (a, b)]
        assert [c.code for c in codes if c] == [1012, 1012]
        assert sim.stats[ID].closes_sent == sim.stats["other"].closes_sent == {1012: 1}


async def test_mass_disconnect_without_code_resets_everything(sim_token: Token) -> None:
    """mass_disconnect without a code is a TCP reset of every connection."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)) as a, _open(_url(sim, "nice", token)) as b:
            sim.inject(Fault(kind="mass_disconnect"))
            closes = [(await _close_of(ws)).rcvd for ws in (a, b)]
        assert closes == [None, None] and sim.stats[ID].drops == {"reset": 2}


async def test_maintenance_notices_closes_1012_and_answers_503(sim_token: Token) -> None:
    """A maintenance window sends closing notices, closes with 1012 and refuses with 503."""
    async with Simulator(_settings()) as sim:
        token = await sim_token(sim, ID, SECRET)
        async with _open(_url(sim, "genesys", token)) as ws:
            sim.inject(Fault(kind="maintenance", duration_s=0.5, delay_s=0.1))
            notice = json.loads(await ws.recv())
            closed = await _close_of(ws)
        assert notice["eventType"] == "system.socket_closing"
        assert closed.rcvd is not None and closed.rcvd.code == 1012
        with pytest.raises(InvalidStatus) as info:
            async with _open(_url(sim, "genesys", token)):
                pass
        assert info.value.response.status_code == 503
        await sim.wait_for(lambda s: not s._maintenance(ID, "genesys"), timeout=3)
        async with _open(_url(sim, "genesys", token)):
            pass


async def test_connection_fault_targets_the_nth_connection_after_n_events(
        sim_token: Token) -> None:
    """"close connection 2 with 1013 after 5 events": connection 1 is untouched."""
    async with Simulator(_settings(rate=300.0)) as sim:
        token = await sim_token(sim, ID, SECRET)
        sim.inject(Fault(kind="close", client=ID, connection=2, after_events=5, code=1013,
                         retry_after=1))
        async with _open(_url(sim, "genesys", token)) as first:
            for _ in range(20):
                await first.recv()
            async with _open(_url(sim, "nice", token)) as second:
                got = 0
                with pytest.raises(ConnectionClosed) as info:
                    while True:
                        await second.recv()
                        got += 1
            assert got == 5 and info.value.rcvd is not None and info.value.rcvd.code == 1013
            await first.recv()


async def test_scheduled_faults_fire_at_their_time(sim_token: Token) -> None:
    """A fault with at_s is armed that many seconds after start, not before."""
    async with Simulator(_settings(), faults=[Fault(kind="reset", at_s=0.3)]) as sim:
        async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))) as ws:
            assert sim.stats[ID].faults["reset"] == 0
            closed = await _close_of(ws)
        assert closed.rcvd is None and sim.stats[ID].faults["reset"] == 1


async def test_chaos_preset_injects_its_seeded_schedule() -> None:
    """The chaos preset injects, on its own, exactly its seeded schedule: a mix of kinds."""
    settings = _settings(preset="chaos", preset_interval_s=0.02, seed=9)
    async with Simulator(settings) as sim:
        await sim.wait_for(lambda s: len(s.injected) >= 12, timeout=5)
        injected = sim.injected[:12]
    expected = list(itertools.islice(
        preset_schedule("chaos", random.Random("chaos:9"), [ID], 0.02), 12))
    assert injected == [replace(f, at_s=None) for f in expected]
    assert len({f.fault_kind for f in injected}) >= 4


async def test_faults_can_be_posted_over_http(sim_token: Token) -> None:
    """POST /_sim/faults injects a JSON list; a bad entry is a 400 naming the problem."""
    async with Simulator(_settings()) as sim:
        async with aiohttp.ClientSession() as http:
            ok = await http.post(f"{sim.base_url}/_sim/faults",
                                 json=[{"kind": "handshake_error", "status": 503}])
            bad = await http.post(f"{sim.base_url}/_sim/faults", json=[{"kind": "boom"}])
            assert ok.status == 200 and bad.status == 400
            assert "boom" in (await bad.json())["error"]
        with pytest.raises(InvalidStatus) as info:
            async with _open(_url(sim, "genesys", await sim_token(sim, ID, SECRET))):
                pass
        assert info.value.response.status_code == 503
