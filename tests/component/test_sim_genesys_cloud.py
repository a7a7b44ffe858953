"""The Genesys Cloud simulator on loopback: every server rule, every fault, every client rule.

Clients are plain aiohttp / websockets written here (never ccstream's connector). Time is
injected: ``Clock`` is the simulator's clock plus an offset a test moves forward, and
``sim.tick`` carries out at once what the clock made due; no test sleeps to wait.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from support.clock import Clock
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from simulator.genesys_cloud import (
    PRESETS,
    GcClient,
    GcFault,
    GcSettings,
    GenesysCloudSimulator,
    Notification,
)
from simulator.genesys_cloud import command as gc_command
from simulator.genesys_cloud.faults import FRAME_VARIANTS, preset_schedule

ID, SECRET = "acme", "s3cret"
ALL_ZERO = {"rest_before_retry_after": 0, "token_before_retry_after": 0, "expired_token": 0,
            "too_many_channels": 0, "over_1000_ids": 0, "socket_overlap": 0}


def _settings(clock: Clock, **overrides: Any) -> GcSettings:
    base: dict[str, Any] = {"clients": (GcClient(ID, SECRET, queues=3, users=3),), "seed": 3,
                            "rate": 0.0, "tick_s": 0.01, "clock": clock}
    return GcSettings(**{**base, **overrides})


class Api:
    """A minimal Genesys Cloud client: token, REST calls, channel set-up."""

    def __init__(self, sim: GenesysCloudSimulator, http: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.http = http
        self.token = ""

    async def get_token(self, client_id: str = ID, secret: str = SECRET,
                        grant: str = "client_credentials") -> tuple[int, dict[str, Any], Any]:
        answer = await self.http.post(
            f"{self.sim.base_url}/oauth/token", data={"grant_type": grant},
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)})
        body = await answer.json()
        if answer.status == 200:
            self.token = body["access_token"]
        return answer.status, dict(answer.headers), body

    async def call(self, method: str, path: str, body: Any = None,
                   token: str | None = None) -> tuple[int, dict[str, str], Any]:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        answer = await self.http.request(method, f"{self.sim.base_url}{path}", json=body,
                                         headers=headers)
        text = await answer.text()
        return answer.status, dict(answer.headers), json.loads(text) if text else None

    async def channel(self) -> dict[str, Any]:
        status, _, body = await self.call("POST", "/api/v2/notifications/channels")
        assert status == 200, body
        return body

    async def put(self, channel_id: str, topics: list[str], ignore: bool = True,
                  method: str = "PUT") -> tuple[int, Any]:
        query = "?ignoreErrors=true" if ignore else ""
        status, _, body = await self.call(
            method, f"/api/v2/notifications/channels/{channel_id}/subscriptions{query}",
            [{"id": t} for t in topics])
        return status, body

    async def head(self, channel_id: str) -> int:
        return (await self.call("HEAD", f"/api/v2/notifications/channels/{channel_id}"))[0]

    async def setup(self, topics: list[str]) -> dict[str, Any]:
        if not self.token:
            await self.get_token()
        channel = await self.channel()
        status, body = await self.put(channel["id"], topics)
        assert status == 200, body
        return channel


@asynccontextmanager
async def running(clock: Clock | None = None, **overrides: Any) -> AsyncIterator[
        tuple[GenesysCloudSimulator, Api, Clock]]:
    clock = clock or Clock()
    async with GenesysCloudSimulator(_settings(clock, **overrides)) as sim, \
            aiohttp.ClientSession() as http:
        yield sim, Api(sim, http), clock


def _open(uri: str) -> Any:
    return connect(uri, ping_interval=None, max_size=None, close_timeout=1, open_timeout=3)


async def _frame(ws: ClientConnection, pred: Callable[[Any], bool] = lambda d: True,
                 timeout: float = 3.0) -> Any:
    """The next frame (decoded JSON, or raw when not JSON) for which ``pred`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            try:
                doc = json.loads(raw)
            except (ValueError, TypeError):
                doc = raw
            if pred(doc):
                return doc


async def _open_sockets(sim: GenesysCloudSimulator, count: int) -> None:
    await sim.wait_for(lambda s: s.stats[ID].sockets_open == count)


def _topic(doc: Any) -> str | None:
    return doc.get("topicName") if isinstance(doc, dict) else None


def _note(sim: GenesysCloudSimulator, n: int = 0, queue: int = 0) -> Notification:
    topic = f"v2.routing.queues.{sim.queue_ids(ID)[queue]}.conversations"
    return Notification(ID, topic, {"id": f"conv-{n}", "n": n})


def _queue_topics(sim: GenesysCloudSimulator) -> list[str]:
    return [f"v2.routing.queues.{q}.conversations" for q in sim.queue_ids(ID)]


async def _closed(ws: ClientConnection, timeout: float = 3.0) -> ConnectionClosed:
    with pytest.raises(ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return info.value


# -- OAuth (s.2) ---------------------------------------------------------------------------------
async def test_token_is_opaque_bearer_with_scaled_expiry_and_no_refresh_token() -> None:
    """Client credentials give an opaque bearer token, expires_in = 24 h / time_scale."""
    async with running(time_scale=100.0) as (_, api, _):
        status, headers, body = await api.get_token()
        assert status == 200
        assert set(body) == {"access_token", "token_type", "expires_in"}
        assert body["token_type"] == "bearer" and body["expires_in"] == 864
        assert "." not in body["access_token"]
        assert headers.get("Cache-Control") == "no-store"


async def test_token_with_a_wrong_secret_is_invalid_client() -> None:
    """A wrong secret (or no Basic auth) answers 401 invalid_client; another grant is 400."""
    async with running() as (sim, api, _):
        status, _, body = await api.get_token(secret="wrong")
        assert (status, body["error"]) == (401, "invalid_client")
        status, _, body = await api.get_token(grant="refresh_token")
        assert (status, body["error"]) == (400, "unsupported_grant_type")
        assert sim.stats[ID].token_errors[401] == 1


# -- REST (s.3) ----------------------------------------------------------------------------------
async def test_queue_and_user_listings_are_paged() -> None:
    """Listings page with pageSize/pageNumber, total and pageCount, and list the org's ids."""
    async with running() as (sim, api, _):
        await api.get_token()
        seen = []
        for number in (1, 2):
            status, _, body = await api.call(
                "GET", f"/api/v2/routing/queues?pageSize=2&pageNumber={number}")
            assert status == 200
            assert (body["pageSize"], body["pageNumber"], body["total"], body["pageCount"]) == (
                2, number, 3, 2)
            seen += [e["id"] for e in body["entities"]]
        assert seen == sim.queue_ids(ID)
        _, _, users = await api.call("GET", "/api/v2/users?pageSize=100&pageNumber=1")
        assert [e["id"] for e in users["entities"]] == sim.user_ids(ID)
        status, _, _ = await api.call("GET", "/api/v2/users?pageSize=0")
        assert status == 400


async def test_channel_creation_and_head() -> None:
    """POST /channels answers id, connectUri, expires (now + 24 h); HEAD is 200 live, 404 not."""
    async with running() as (sim, api, clock):
        await api.get_token()
        channel = await api.channel()
        assert set(channel) == {"id", "connectUri", "expires"}
        assert channel["connectUri"] == sim.connect_uri(channel["id"])
        assert channel["connectUri"].startswith("ws://127.0.0.1:")
        expires = time.mktime(time.strptime(channel["expires"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert abs(expires - time.timezone - (clock() + 86_400)) < 5
        assert await api.head(channel["id"]) == 200
        assert await api.head("00000000-0000-4000-8000-000000000000") == 404


async def test_subscriptions_put_replaces_post_adds_get_lists() -> None:
    """PUT replaces the list, POST adds to it, GET lists it; each answer is every topic held."""
    async with running() as (sim, api, _):
        topics = _queue_topics(sim)
        channel = await api.setup(topics[:2])
        cid = channel["id"]
        status, body = await api.put(cid, [topics[2]], method="POST")
        assert status == 200
        assert [e["id"] for e in body["entities"]] == topics
        assert {e["state"] for e in body["entities"]} == {"Permitted"}
        _, _, listed = await api.call("GET", f"/api/v2/notifications/channels/{cid}/subscriptions")
        assert listed == body
        status, body = await api.put(cid, [topics[1]])
        assert [e["id"] for e in body["entities"]] == [topics[1]]


async def test_more_than_1000_ids_is_400_nothing_changed_and_breaks_the_rule() -> None:
    """A call leaving > 1000 ids on a channel is 400, changes nothing, and is counted."""
    async with running() as (sim, api, _):
        topics = _queue_topics(sim)
        channel = await api.setup(topics[:1])
        assert sim.rules(ID)["over_1000_ids"] == 0
        many = [f"v2.users.{i:08d}-0000-4000-8000-000000000000.presence" for i in range(1000)]
        status, body = await api.put(channel["id"], many, method="POST")
        assert status == 400 and body["code"] == "bad.request"
        assert sim.rules(ID)["over_1000_ids"] == 1
        _, _, listed = await api.call(
            "GET", f"/api/v2/notifications/channels/{channel['id']}/subscriptions")
        assert [e["id"] for e in listed["entities"]] == topics[:1]
        status, _ = await api.put(channel["id"], many[:1000])   # exactly 1000 is fine
        assert status == 200 and sim.rules(ID)["over_1000_ids"] == 1


async def test_combined_id_counts_once_and_expands_to_single_names() -> None:
    """``prefix?a&b`` is one id on the channel; frames carry the single topic names."""
    async with running() as (sim, api, _):
        user = sim.user_ids(ID)[0]
        channel = await api.setup([f"v2.users.{user}?presence&routingStatus"])
        async with _open(channel["connectUri"]) as ws:
            sim.publish(Notification(ID, f"v2.users.{user}.routingStatus",
                                     {"routingStatus": {"startTime": "x"}}))
            doc = await _frame(ws, lambda d: _topic(d) not in ("channel.metadata",))
            assert doc["topicName"] == f"v2.users.{user}.routingStatus"


async def test_denied_topic_is_403_without_the_flag_and_rejected_with_it() -> None:
    """deny_topics: 403 for the whole request without ignoreErrors (nothing subscribed); with it
    200, the topic Rejected with rejectionReason and missingPermissions, the rest Permitted."""
    async with running() as (sim, api, _):
        topics = _queue_topics(sim)
        sim.inject(GcFault("deny_topics", client=ID, topics=(topics[0],),
                           permissions=("routing:queue:view",)))
        await api.get_token()
        cid = (await api.channel())["id"]
        status, body = await api.put(cid, topics, ignore=False)
        assert status == 403 and body["code"] == "missing.permissions"
        _, _, listed = await api.call("GET", f"/api/v2/notifications/channels/{cid}/subscriptions")
        assert listed["entities"] == []
        status, body = await api.put(cid, topics)
        assert status == 200
        first = body["entities"][0]
        assert first["state"] == "Rejected" and first["rejectionReason"]
        assert first["missingPermissions"] == ["routing:queue:view"]
        assert [e["state"] for e in body["entities"][1:]] == ["Permitted", "Permitted"]
        assert sim.stats[ID].faults["deny_topics"] == 1


async def test_unknown_or_malformed_ids_are_400_without_the_flag_rejected_with_it() -> None:
    """Other topics, another org's ids and ids of 200+ characters: 400, or Rejected."""
    async with running() as (sim, api, _):
        bad = ["v2.bogus.topic", "v2.routing.queues.00000000-0000-4000-8000-000000000000"
               ".conversations", "v2.users." + "x" * 200 + ".presence",
               f"v2.users.{sim.user_ids(ID)[0]}?presence&nonsense"]
        await api.get_token()
        cid = (await api.channel())["id"]
        for topic in bad:
            status, body = await api.put(cid, [topic], ignore=False)
            assert status == 400, topic
        status, body = await api.put(cid, [*bad, _queue_topics(sim)[0]])
        assert status == 200
        assert [e["state"] for e in body["entities"]] == ["Rejected"] * 4 + ["Permitted"]
        assert sim.stats[ID].topics_rejected == 4


async def test_subscription_calls_extend_expiry_get_and_head_do_not() -> None:
    """A successful PUT moves expiry to now + TTL; GET/HEAD do not; an expired channel sends the
    404 frame, closes 1000, and HEAD/subscriptions answer 404."""
    async with running(channel_ttl_s=10.0) as (sim, api, clock):
        topics = _queue_topics(sim)
        kept = await api.setup(topics)
        lapsed = await api.setup(topics)
        async with _open(lapsed["connectUri"]) as ws:
            clock.advance(6)
            await api.put(kept["id"], topics)
            assert await api.head(lapsed["id"]) == 200
            await api.call("GET", f"/api/v2/notifications/channels/{lapsed['id']}/subscriptions")
            clock.advance(5)
            assert await api.head(lapsed["id"]) == 404
            assert await api.head(kept["id"]) == 200
            doc = await _frame(ws, lambda d: isinstance(d, dict) and "result" in d)
            assert doc["result"] == "404"
            assert (await _closed(ws)).rcvd.code == 1000
        status, _ = await api.put(lapsed["id"], topics)
        assert status == 404
        assert sim.stats[ID].channels_expired == 1
        clock.advance(6)
        assert await api.head(kept["id"]) == 404


async def test_21st_channel_evicts_the_oldest_socketless_one() -> None:
    """With 20 live channels, POST evicts the oldest by last use, socketless first."""
    async with running() as (sim, api, _):
        await api.get_token()
        channels = [await api.channel() for _ in range(20)]
        async with _open(channels[0]["connectUri"]):
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            await api.channel()
            assert await api.head(channels[0]["id"]) == 200
            assert await api.head(channels[1]["id"]) == 404
            assert sim.stats[ID].channels_evicted == 1
            assert sim.rules(ID)["too_many_channels"] == 0


async def test_post_channel_when_every_channel_has_a_socket_breaks_the_rule() -> None:
    """All live channels socketed: POST is counted and evicts the oldest by last use (socket
    open counts as use): its socket gets the 404 frame and close 1000."""
    async with running(max_channels=3) as (sim, api, clock):
        await api.get_token()
        channels = [await api.channel() for _ in range(3)]
        sockets = []
        for index in (2, 0, 1):   # last use: channel 2 oldest
            clock.advance(1)
            sockets.append(await _open(channels[index]["connectUri"]))
            await _open_sockets(sim, len(sockets))
        assert sim.rules(ID)["too_many_channels"] == 0
        await api.channel()
        assert sim.rules(ID)["too_many_channels"] == 1
        assert await _frame(sockets[0], lambda d: isinstance(d, dict) and "result" in d)
        assert (await _closed(sockets[0])).rcvd.code == 1000
        assert await api.head(channels[2]["id"]) == 404
        assert await api.head(channels[0]["id"]) == 200
        for ws in sockets[1:]:
            await ws.close()


async def test_rate_limit_is_per_token_429_normalised_and_early_calls_break_the_rule() -> None:
    """Over the limit in the window: 429 with Retry-After and the normalised body (HEAD counts,
    the token endpoint does not); a call before the Retry-After is counted; another token has
    its own window; after the window the call works."""
    async with running(rate_limit=3) as (sim, api, clock):
        await api.get_token()
        cid = (await api.channel())["id"]
        await api.get_token()
        first = api.token
        await api.get_token()
        api.token = first
        assert await api.head(cid) == 200
        assert await api.head(cid) == 200
        status, headers, _ = await api.call("GET", "/api/v2/users")
        assert status == 200
        status, headers, body = await api.call("GET", "/api/v2/users")
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert set(body) == {"message", "code", "status", "contextId", "details", "errors"}
        assert (body["code"], body["status"], body["details"], body["errors"]) == (
            "too.many.requests.retry.after", 429, [], [])
        assert sim.rules(ID)["rest_before_retry_after"] == 0
        status, _, _ = await api.call("GET", "/api/v2/users")
        assert status == 429 and sim.rules(ID)["rest_before_retry_after"] == 1
        clock.advance(61)
        status, _, _ = await api.call("GET", "/api/v2/users")
        assert status == 200 and sim.rules(ID)["rest_before_retry_after"] == 1
        assert sim.stats[ID].rate_limited == 2


async def test_error_bodies_are_normalised() -> None:
    """401 bad.credentials (unknown token), 404 not.found (unknown channel, unknown path)."""
    async with running() as (_, api, _):
        status, _, body = await api.call("GET", "/api/v2/users", token="nope")
        assert (status, body["code"]) == (401, "bad.credentials")
        await api.get_token()
        status, _, body = await api.call(
            "GET", "/api/v2/notifications/channels/unknown/subscriptions")
        assert (status, body["code"], body["details"]) == (404, "not.found", [])
        status, _, body = await api.call("GET", "/api/v2/elsewhere")
        assert (status, body["code"]) == (404, "not.found")


async def test_expired_token_is_401_and_breaks_the_rule() -> None:
    """A REST call with a token past issue + expires_in is 401 and counted."""
    async with running(token_lifetime_s=300.0) as (sim, api, clock):
        await api.get_token()
        assert (await api.call("GET", "/api/v2/users"))[0] == 200
        assert sim.rules(ID)["expired_token"] == 0
        clock.advance(300.1)
        status, _, body = await api.call("GET", "/api/v2/users")
        assert (status, body["code"]) == (401, "bad.credentials")
        assert sim.rules(ID)["expired_token"] == 1


# -- the WebSocket (s.5) -------------------------------------------------------------------------
async def test_notification_frame_shape_and_ledger() -> None:
    """A notification is {topicName, version, eventBody, metadata.CorrelationId}; the ledger
    holds its topic, channel, socket and the sha256 of the very bytes received."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.publish(_note(sim, 1))
            raw = await ws.recv()
        assert isinstance(raw, str)
        doc = json.loads(raw)
        assert set(doc) == {"topicName", "version", "eventBody", "metadata"}
        assert doc["eventBody"] == {"id": "conv-1", "n": 1}
        assert doc["metadata"]["CorrelationId"]
        [entry] = sim.ledger.notifications[ID]
        assert entry.sha256 == hashlib.sha256(raw.encode()).hexdigest()
        assert (entry.topic, entry.channel) == (doc["topicName"], channel["id"])
        ledger = sim.ledger.to_json(ID)["clients"][ID]
        assert ledger["notifications"][0]["sha256"] == entry.sha256


async def test_heartbeat_every_heartbeat_s() -> None:
    """channel.metadata "WebSocket Heartbeat" every heartbeat_s of the server's clock."""
    async with running() as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            clock.advance(30.05)
            doc = await _frame(ws)
            assert doc == {"topicName": "channel.metadata",
                           "eventBody": {"message": "WebSocket Heartbeat"}}
            assert sim.stats[ID].heartbeats_sent == 1


async def test_text_ping_is_answered_with_a_pong() -> None:
    """The text {"message": "ping"} gets channel.metadata "pong" (within 1 s)."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await ws.send('{"message": "ping"}')
            doc = await _frame(ws, timeout=1.0)
            assert doc == {"topicName": "channel.metadata", "eventBody": {"message": "pong"}}
            await ws.ping()   # an RFC ping is answered too
        assert (sim.stats[ID].pings, sim.stats[ID].pongs) == (1, 1)


async def test_socket_on_an_unknown_channel_gets_the_404_frame() -> None:
    """A handshake on an unknown channel: the 404 frame, then close 1000."""
    async with running() as (sim, _, _), _open(sim.connect_uri("unknown")) as ws:
        doc = await _frame(ws)
        assert doc["result"] == "404" and doc["message"]
        assert (await _closed(ws)).rcvd.code == 1000


async def test_a_new_socket_takes_the_channel_the_old_gets_4000_after_the_grace() -> None:
    """One socket per channel: during the grace both get notifications (identical bytes),
    then the old one is closed 4000 "replaced"."""
    async with running(replace_grace_s=1.0) as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as old, _open(channel["connectUri"]) as new:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 2)
            sim.publish(_note(sim, 7))
            assert await old.recv() == await new.recv()
            assert sim.stats[ID].duplicates_sent == 1
            clock.advance(1.0)
            closed = await _closed(old)
            assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "replaced")
            sim.publish(_note(sim, 8))
            assert json.loads(await new.recv())["eventBody"]["n"] == 8
        assert sim.rules(ID) == ALL_ZERO


# -- no replay, coverage, analytics (s.6, s.7) ---------------------------------------------------
async def test_no_replay_the_uncovered_interval_and_its_backfill() -> None:
    """What is published with no socket is gone; the server records the uncovered interval; a
    conversation active in it is found by the analytics query after the lag."""
    async with running(analytics_lag_s=5.0) as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]):
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
        await sim.wait_for(lambda s: s.stats[ID].sockets_open == 0)
        generator = sim.generators[ID]
        for _ in range(40):
            for note in generator.step(sim.now()):
                sim.publish(note)
        assert sim.stats[ID].notifications_sent == 0
        dropped = sim.stats[ID].notifications_dropped
        assert dropped > 0
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            with pytest.raises(TimeoutError):
                await _frame(ws, timeout=0.2)
        [(start, end)] = sim.uncovered(ID)
        active = [c for c in sim.stores[ID].conversations.values() if start <= c.start <= end]
        assert active
        interval = (f"{_iso(start - 2)}/{_iso(end + 2)}")
        query = {"interval": interval, "order": "asc", "orderBy": "conversationStart",
                 "paging": {"pageSize": 100, "pageNumber": 1}}
        path = "/api/v2/analytics/conversations/details/query"
        _, _, early = await api.call("POST", path, query)
        assert "conversations" not in early and early["totalHits"] == 0  # the lag
        clock.advance(5.1)
        status, _, body = await api.call("POST", path, query)
        assert status == 200
        assert {c.id for c in active} <= {c["conversationId"] for c in body["conversations"]}
        conversation = body["conversations"][0]
        segment = conversation["participants"][0]["sessions"][0]["segments"][0]
        assert {"conversationId", "conversationStart", "participants"} <= set(conversation)
        assert "segmentStart" in segment
        ledger = sim.ledger.to_json(ID)["clients"][ID]
        assert ledger["uncovered"] == [[start, end]] and ledger["conversations"]


def _iso(epoch: float) -> str:
    from ccstream.records import rfc3339

    return rfc3339(epoch)


async def test_users_query_lists_presence_and_routing_records() -> None:
    """users/details/query: userDetails with primaryPresence and routingStatus records."""
    async with running(analytics_lag_s=0.0) as (sim, api, clock):
        await api.get_token()
        generator = sim.generators[ID]
        for _ in range(30):
            generator.step(sim.now())
        clock.advance(1)
        interval = f"{_iso(sim.now() - 3600)}/{_iso(sim.now() + 1)}"
        status, _, body = await api.call("POST", "/api/v2/analytics/users/details/query",
                                         {"interval": interval,
                                          "paging": {"pageSize": 100, "pageNumber": 1}})
        assert status == 200 and body["totalHits"] == 3
        assert [u["userId"] for u in body["userDetails"]] == sorted(sim.user_ids(ID))
        record = body["userDetails"][0]["primaryPresence"][0]
        assert {"startTime", "systemPresence", "organizationPresenceId"} <= set(record)
        assert "routingStatus" in body["userDetails"][0]["routingStatus"][0]
        status, _, body = await api.call("POST", "/api/v2/analytics/users/details/query",
                                         {"interval": "yesterday"})
        assert (status, body["code"]) == (400, "bad.request")


# -- faults (s.10) -------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "error"), [(401, "invalid_client"), (429, None),
                                               (503, "server_error")])
async def test_token_error_fault(status: int, error: str | None) -> None:
    """token_error answers the next token request with its status, then grants again."""
    async with running() as (sim, api, _):
        sim.inject(GcFault("token_error", client=ID, status=status, retry_after=2.0))
        got, headers, body = await api.get_token()
        assert got == status
        if status == 429:
            assert headers["Retry-After"] == "2"
            assert body["code"] == "too.many.requests.retry.after"
        else:
            assert body["error"] == error
        assert sim.stats[ID].faults["token_error"] == 1


async def test_token_error_expires_in_and_the_token_429_rule() -> None:
    """expires_in gives a grant of that lifetime (scaled); a token request before a token 429's
    Retry-After is counted, one after it is not."""
    async with running(time_scale=10.0) as (sim, api, clock):
        sim.inject(GcFault("token_error", expires_in=300.0))
        _, _, body = await api.get_token()
        assert body["expires_in"] == 30
        sim.inject(GcFault("token_error", status=429, retry_after=1.0))
        assert (await api.get_token())[0] == 429
        assert sim.rules(ID)["token_before_retry_after"] == 0
        assert (await api.get_token())[0] == 200
        assert sim.rules(ID)["token_before_retry_after"] == 1
        clock.advance(1)
        sim.inject(GcFault("token_error", status=429, retry_after=1.0))
        assert (await api.get_token())[0] == 429
        clock.advance(0.96)   # within the 50 ms tolerance
        assert (await api.get_token())[0] == 200
        assert sim.rules(ID)["token_before_retry_after"] == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_rest_error_fault_on_a_path(status: int) -> None:
    """rest_error answers the next COUNT calls on matching paths, normalised; others pass."""
    async with running() as (sim, api, _):
        await api.get_token()
        sim.inject(GcFault("rest_error", status=status, path="/api/v2/users", count=2,
                           retry_after=3.0))
        assert (await api.call("GET", "/api/v2/routing/queues"))[0] == 200
        got, headers, body = await api.call("GET", "/api/v2/users")
        assert (got, body["status"], headers["Retry-After"]) == (status, status, "3")
        assert sim.stats[ID].faults["rest_error"] == 1


async def test_silent_fault_half_open_then_dropped() -> None:
    """silent: no notification, heartbeat or pong; uncovered on the server; TCP dropped later."""
    async with running() as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("silent", duration_s=40.0))
            sim.publish(_note(sim))
            await ws.send('{"message": "ping"}')
            clock.advance(31)
            sim.tick(sim.now())
            with pytest.raises(TimeoutError):
                await _frame(ws, timeout=0.2)
            assert sim.coverage.open_since(ID) is not None
            assert sim.stats[ID].pongs == 0 and sim.stats[ID].notifications_sent == 0
            assert sim.stats[ID].heartbeats_sent == 0
            clock.advance(10)
            closed = await _closed(ws)
            assert closed.rcvd is None      # no close frame: the TCP connection went away
            assert sim.stats[ID].drops["silent"] == 1


async def test_pong_delay_and_pong_drop() -> None:
    """pong_delay: the pong comes DELAY_S later; pong_drop: the next ping gets none."""
    async with running() as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("pong_delay", delay_s=3.0))
            await ws.send('{"message": "ping"}')
            with pytest.raises(TimeoutError):
                await _frame(ws, timeout=0.2)
            clock.advance(3)
            assert (await _frame(ws))["eventBody"] == {"message": "pong"}
            sim.inject(GcFault("pong_drop"))
            await ws.send('{"message": "ping"}')
            with pytest.raises(TimeoutError):
                await _frame(ws, timeout=0.2)
            await ws.send('{"message": "ping"}')
            assert (await _frame(ws))["eventBody"] == {"message": "pong"}
        stats = sim.stats[ID]
        assert (stats.pongs_delayed, stats.pongs_dropped, stats.pongs) == (1, 1, 2)


@pytest.mark.parametrize("variant", FRAME_VARIANTS)
async def test_frames_fault(variant: str) -> None:
    """Each frames variant is observable on the client side."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            if variant == "resend":
                sim.publish(_note(sim, 1))
                first = await ws.recv()
            sim.inject(GcFault("frames", variant=variant))
            if variant in ("extra_fields", "reorder"):
                sim.publish(_note(sim, 1, queue=0))
                sim.publish(_note(sim, 2, queue=1))
            if variant == "invalid_utf8":
                assert (await _closed(ws)).sent.code == 1007  # the client refuses it
                return
            raw = await asyncio.wait_for(ws.recv(), 3)
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if variant == "unknown_topic":
            assert doc["topicName"] == "v2.simulator.unknown.topic"
        elif variant == "extra_fields":
            assert "extraField" in doc and doc["eventBody"]["n"] == 1
        elif variant == "resend":
            assert raw == first
        elif variant == "reorder":
            assert doc["eventBody"]["n"] == 2      # the second topic's frame came first
        elif variant == "not_json":
            assert doc is None
        elif variant == "not_object":
            assert isinstance(doc, list)
        elif variant == "missing_field":
            assert "eventBody" not in doc
        elif variant == "binary":
            assert isinstance(raw, bytes)
        elif variant == "oversized":
            assert len(raw) > 1_048_576
        assert sim.stats[ID].frames_sent[variant] == 1


async def test_closing_notice_then_1001_after_notice_s() -> None:
    """closing_notice: v2.system.socket_closing with its fields, 1001 notice_s later."""
    async with running() as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("closing_notice"))
            doc = await _frame(ws)
            assert doc["topicName"] == "v2.system.socket_closing"
            assert set(doc["eventBody"]) == {
                "channelId", "systemTopicType", "correlationId", "organizationId", "userId",
                "oauthClientId", "reason", "message", "data"}
            assert doc["eventBody"]["channelId"] == channel["id"]
            sim.publish(_note(sim))   # still delivering during the notice
            assert (await _frame(ws))["eventBody"]["id"] == "conv-0"
            clock.advance(59.5)
            sim.tick(sim.now())
            with pytest.raises(TimeoutError):   # a heartbeat, but no close yet
                await _frame(ws, lambda d: _topic(d) != "channel.metadata", timeout=0.1)
            clock.advance(0.6)
            assert (await _closed(ws)).rcvd.code == 1001


@pytest.mark.parametrize(("kind", "code"), [("idle_close", 1001), ("reset", None)])
async def test_idle_close_and_reset(kind: str, code: int | None) -> None:
    """idle_close: close 1001 now; reset: the TCP connection is reset, no close frame."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault(kind))
            closed = await _closed(ws)
            assert (closed.rcvd.code if closed.rcvd else None) == code
        await sim.wait_for(lambda s: s.stats[ID].sockets_open == 0)
        assert sim.stats[ID].faults[kind] == 1


@pytest.mark.parametrize("variant", ["expired", "evicted"])
async def test_channel_gone_fault(variant: str) -> None:
    """channel_gone: the 404 frame, close 1000; HEAD and subscription calls answer 404."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("channel_gone", variant=variant))
            assert (await _frame(ws))["result"] == "404"
            assert (await _closed(ws)).rcvd.code == 1000
        assert await api.head(channel["id"]) == 404
        assert (await api.put(channel["id"], _queue_topics(sim)))[0] == 404
        assert sim.board.channels[channel["id"]].gone == variant


async def test_replace_fault_takes_the_channel_from_the_client() -> None:
    """replace: the client's socket gets 4000 at once, and no longer receives the channel's
    notifications (the channel itself stays live)."""
    async with running() as (sim, api, _):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as ws:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("replace"))
            closed = await _closed(ws)
            assert (closed.rcvd.code, closed.rcvd.reason) == (4000, "replaced")
        assert sim.publish(_note(sim)) == 0
        assert await api.head(channel["id"]) == 200
        assert sim.stats[ID].channels_replaced == 1


async def test_analytics_faults_drift_insert_429_and_lag() -> None:
    """analytics: totalHits drifts; inserted items repeat on the next page (none skipped); a
    page answers 429 with Retry-After; lag hides recent activity for a while."""
    async with running(analytics_lag_s=0.0) as (sim, api, clock):
        await api.get_token()
        generator = sim.generators[ID]
        while len(sim.stores[ID].conversations) < 6:
            generator.step(sim.now())
        clock.advance(1)
        path = "/api/v2/analytics/conversations/details/query"

        interval = f"{_iso(sim.now() - 600)}/{_iso(sim.now())}"

        def query(number: int) -> dict[str, Any]:
            return {"interval": interval, "order": "asc", "orderBy": "conversationStart",
                    "paging": {"pageSize": 3, "pageNumber": number}}

        _, _, page1 = await api.call("POST", path, query(1))
        total = page1["totalHits"]
        sim.inject(GcFault("analytics", variant="insert", items=2))
        _, _, page2 = await api.call("POST", path, query(2))
        ids1 = [c["conversationId"] for c in page1["conversations"]]
        ids2 = [c["conversationId"] for c in page2["conversations"]]
        assert ids2[:2] == ids1[1:] and page2["totalHits"] == total + 2
        sim.inject(GcFault("analytics", variant="drift", drift=4))
        _, _, drifted = await api.call("POST", path, query(1))
        assert drifted["totalHits"] == total + 2 + 4
        sim.inject(GcFault("analytics", variant="page_429", retry_after=2.0))
        status, headers, body = await api.call("POST", path, query(1))
        assert (status, headers["Retry-After"], body["status"]) == (429, "2", 429)
        clock.advance(2)
        wide = {"interval": f"{_iso(sim.now() - 600)}/{_iso(sim.now() + 600)}",
                "paging": {"pageSize": 100, "pageNumber": 1}}
        shown = len((await api.call("POST", path, wide))[2]["conversations"])
        sim.inject(GcFault("analytics", variant="lag", lag_s=30.0, duration_s=60.0))
        clock.advance(0.5)
        while len(sim.stores[ID].conversations) == 6:
            generator.step(sim.now())
        clock.advance(1)
        lagged = (await api.call("POST", path, wide))[2]["conversations"]
        assert len(lagged) == shown   # the new one is not there yet; nothing shown disappears
        clock.advance(30)
        assert len((await api.call("POST", path, wide))[2]["conversations"]) == shown + 1
        assert sim.stats[ID].faults["analytics"] == 4


# -- client rules (s.11) -------------------------------------------------------------------------
async def test_socket_overlap_beyond_1_s_breaks_the_rule() -> None:
    """Two sockets on one channel more than 1 s after the second's handshake: counted."""
    async with running(replace_grace_s=10.0) as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]), _open(channel["connectUri"]):
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 2)
            clock.advance(0.5)
            sim.tick(sim.now())
            assert sim.rules(ID)["socket_overlap"] == 0
            clock.advance(0.7)
            sim.tick(sim.now())
            assert sim.rules(ID)["socket_overlap"] == 1


async def test_socket_overlap_after_a_closing_notice_is_allowed_5_s() -> None:
    """After a closing notice on the first socket, the overlap may last 5 s."""
    async with running(replace_grace_s=10.0) as (sim, api, clock):
        channel = await api.setup(_queue_topics(sim))
        async with _open(channel["connectUri"]) as first:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("closing_notice"))
            await _frame(first)
            async with _open(channel["connectUri"]):
                await sim.wait_for(lambda s: s.stats[ID].sockets_open == 2)
                clock.advance(4.0)
                sim.tick(sim.now())
                assert sim.rules(ID)["socket_overlap"] == 0
                clock.advance(1.2)
                sim.tick(sim.now())
                assert sim.rules(ID)["socket_overlap"] == 1


async def test_a_well_behaved_client_breaks_no_rule() -> None:
    """Token, listings, channel, PUT, connect, 429 obeyed, make-before-break on a closing
    notice, a token renewed before expiry: every rule counter stays 0."""
    async with running(replace_grace_s=10.0, token_lifetime_s=600.0) as (sim, api, clock):
        await api.get_token()
        for path in ("/api/v2/routing/queues", "/api/v2/users"):
            assert (await api.call("GET", f"{path}?pageSize=100&pageNumber=1"))[0] == 200
        channel = await api.setup(_queue_topics(sim))
        sim.inject(GcFault("rest_error", status=429, retry_after=1.0))
        status, headers, _ = await api.call("HEAD", f"/api/v2/notifications/channels/"
                                            f"{channel['id']}")
        assert status == 429
        clock.advance(float(headers["Retry-After"]))
        assert await api.head(channel["id"]) == 200
        async with _open(channel["connectUri"]) as first:
            await sim.wait_for(lambda s: s.stats[ID].sockets_open == 1)
            sim.inject(GcFault("closing_notice"))
            await _frame(first)
            async with _open(channel["connectUri"]) as second:
                await sim.wait_for(lambda s: s.stats[ID].sockets_open == 2)
                await first.close()
                clock.advance(2)
                sim.tick(sim.now())
                sim.publish(_note(sim, 3))
                assert json.loads(await second.recv())["eventBody"]["n"] == 3
                clock.advance(590)   # renew before expiry - min(buffer, expires_in / 2)
                await api.get_token()
                assert (await api.put(channel["id"], _queue_topics(sim)))[0] == 200
                sim.tick(sim.now())
        assert sim.rules(ID) == ALL_ZERO
        assert sim.snapshot()["clients"][ID]["rules"] == ALL_ZERO


# -- control endpoints, presets, command ---------------------------------------------------------
async def test_sim_endpoints_stats_ledger_and_faults() -> None:
    """GET /_sim/stats and /_sim/ledger answer JSON; POST /_sim/faults injects a list."""
    async with running(rate=50.0) as (sim, api, _):
        http = api.http
        answer = await http.post(f"{sim.base_url}/_sim/faults",
                                 json=[{"kind": "rest_error", "status": 503}])
        assert (answer.status, await answer.json()) == (200, {"injected": 1})
        answer = await http.post(f"{sim.base_url}/_sim/faults", json=[{"kind": "nope"}])
        assert answer.status == 400
        stats = await (await http.get(f"{sim.base_url}/_sim/stats")).json()
        assert stats["clients"][ID]["rules"] == ALL_ZERO
        assert stats["armed_faults"] == [{"kind": "rest_error", "status": 503}]
        await sim.wait_for(lambda s: s.stats[ID].notifications_published > 0)
        ledger = await (await http.get(f"{sim.base_url}/_sim/ledger?client={ID}")).json()
        doc = ledger["clients"][ID]
        assert {"notifications", "uncovered", "conversations", "users"} <= set(doc)
        assert len(doc["users"]) == 3


def test_presets_are_seeded_and_cover_every_group() -> None:
    """Every group has a preset; the same seed gives the same schedule; presets never use
    faults that a correct client cannot survive."""
    import random

    assert {"chaos", "network", "channels", "rest", "analytics", "frames"} <= set(PRESETS)

    def take(name: str, seed: int) -> list[GcFault]:
        schedule = preset_schedule(name, random.Random(f"gc:{name}:{seed}"), [ID], 2.0)
        return [next(schedule) for _ in range(60)]

    for name in PRESETS:
        assert take(name, 1) == take(name, 1)
        assert take(name, 1) != take(name, 2)
    kinds = {f.kind for f in take("chaos", 5)}
    assert "deny_topics" not in kinds and len(kinds) >= 8
    assert all(f.status != 401 for f in take("rest", 5))


async def test_a_preset_fires_on_its_schedule() -> None:
    """GcSettings(preset=...) injects faults on the seeded schedule while running."""
    async with running(preset="analytics", preset_interval_s=0.02) as (sim, _, _):
        await sim.wait_for(lambda s: len(s.injected) >= 3)
        assert {f.kind for f in sim.injected} == {"analytics"}


def test_command_prints_the_streams_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    """main() serves until --duration and prints URLs and a [[streams]] block."""
    parser = argparse.ArgumentParser()
    for name, default in (("--host", "127.0.0.1"), ("--port", 0), ("--seed", 0),
                          ("--rate", 5.0), ("--duration", 0.3), ("--time-scale", 1.0)):
        parser.add_argument(name, type=type(default), default=default)
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--faults", default=None)
    parser.add_argument("--client", action="append", default=[])
    gc_command.add_arguments(parser)
    args = parser.parse_args(["--client", "acme:pw", "--faults", "chaos", "--gc-queues", "2"])
    assert gc_command.main(args) == 0
    out = capsys.readouterr().out
    assert "[[streams]]" in out and 'platform = "genesys-cloud"' in out
    assert 'client_id = "acme"' in out and 'client_secret_env = "CCSTREAM_GC_ACME_SECRET"' in out
    assert "api_url = \"http://127.0.0.1:" in out and "topics = [" in out
    bad = parser.parse_args(["--fault", "kind=nope"])
    assert gc_command.main(bad) == 2
