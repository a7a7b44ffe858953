"""Pure parts of the Genesys Cloud simulator, driven with a hand clock: no I/O, milliseconds."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import pytest

from simulator.genesys_cloud import faults as gc_faults
from simulator.genesys_cloud.access import RetryBook, RuleBook, SlidingWindow, TokenBook
from simulator.genesys_cloud.analytics import ActivityStore, AnalyticsQuery, PageEffect
from simulator.genesys_cloud.board import GcFaultBoard
from simulator.genesys_cloud.channels import ChannelBoard, SockState, Verdict
from simulator.genesys_cloud.coverage import Coverage, merge
from simulator.genesys_cloud.faults import GcFault, GcFaultError, parse_inline, parse_script
from simulator.genesys_cloud.generator import Generator, Org
from simulator.genesys_cloud.model import expand, parse_interval, parse_topic
from simulator.genesys_cloud.settings import GcClient

PURE = ("settings", "model", "access", "channels", "coverage", "analytics", "generator",
        "faults", "board", "frames", "stats")
FORBIDDEN = {"asyncio", "time", "random", "socket", "aiohttp", "websockets", "aiokafka", "faust"}


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_io_clock_or_random(name: str) -> None:
    """The decision modules import no asyncio, time, random, sockets or network libraries."""
    path = Path(__file__).parents[2] / "simulator" / "genesys_cloud" / f"{name}.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN


def _board(**overrides: object) -> ChannelBoard:
    options: dict[str, object] = {"ttl_s": 100.0, "max_channels": 3, "max_topics": 4,
                                  "heartbeat_s": 30.0, "replace_grace_s": 1.0,
                                  "grace_duplicates": True}
    return ChannelBoard(**{**options, **overrides})  # type: ignore[arg-type]


def _ok(_: str) -> Verdict:
    return Verdict("ok")


def test_sliding_window_admits_the_limit_then_says_when_a_slot_frees() -> None:
    """limit calls per key in any window; the answer is the wait until the oldest leaves."""
    window = SlidingWindow(3, 60.0)
    assert [window.admit("t", t) for t in (0.0, 10.0, 20.0)] == [None, None, None]
    assert window.admit("t", 30.0) == pytest.approx(30.0)
    assert window.admit("other", 30.0) is None
    assert window.admit("t", 60.0) is None
    assert window.used("t", 60.0) == 3


def test_retry_book_has_a_50_ms_tolerance_and_tokens_expire() -> None:
    """A request 50 ms before the promised time is on time; one earlier is early."""
    retry = RetryBook()
    retry.promise("c", "rest", 100.0, 2)
    assert retry.early("c", "rest", 101.9)
    assert not retry.early("c", "rest", 101.96)
    assert not retry.early("c", "token", 100.5)
    tokens = TokenBook(random.Random(1))
    info = tokens.lookup(tokens.issue("c", 0.0, 300.0))
    assert info is not None and not info.expired(299.9) and info.expired(300.0)
    rules = RuleBook()
    rules.count("c", "expired_token")
    assert rules.of("c")["expired_token"] == 1 and rules.broken("c") == 1
    with pytest.raises(ValueError, match="unknown rule"):
        rules.count("c", "nope")


def test_eviction_is_socketless_first_then_oldest_by_last_use() -> None:
    """At the limit, POST evicts a socketless channel before any socketed one; when all have a
    socket, the oldest by last use goes and the rule is broken."""
    board = _board()
    a, b, _ = (board.create("x", n, float(i)).channel for i, n in enumerate("abc"))
    board.open_socket("a", "s1", 5.0)
    created = board.create("x", "d", 6.0)
    assert created.evicted is b and not created.over_limit
    board.open_socket("c", "s2", 7.0)
    board.open_socket("d", "s3", 8.0)
    created = board.create("x", "e", 9.0)
    assert created.over_limit and created.evicted is a
    assert [x.kind for x in created.actions] == ["not_found"]


def test_subscribe_limit_rejections_and_expiry() -> None:
    """> max_topics is 400 with the flag; invalid 400 / denied 403 without it; Rejected with it;
    success moves expiry and holds Rejected topics in the list."""
    board = _board()
    channel = board.create("x", "a", 0.0).channel

    def check(topic: str) -> Verdict:
        return {"bad": Verdict("invalid", "Invalid topic"),
                "no": Verdict("denied", "Missing permissions", ("p",))}.get(topic, Verdict("ok"))

    result = board.subscribe(channel, list("12345"), replace=True, ignore_errors=True, now=1.0,
                             check=check)
    assert (result.status, result.over_limit) == (400, True)
    assert board.subscribe(channel, ["bad"], replace=True, ignore_errors=False, now=1.0,
                           check=check).status == 400
    assert board.subscribe(channel, ["no"], replace=True, ignore_errors=False, now=1.0,
                           check=check).status == 403
    assert channel.expires == 100.0
    result = board.subscribe(channel, ["1", "no"], replace=True, ignore_errors=True, now=50.0,
                             check=check)
    assert result.entities == [
        {"id": "1", "state": "Permitted"},
        {"id": "no", "state": "Rejected", "rejectionReason": "Missing permissions",
         "missingPermissions": ["p"]}]
    assert channel.expires == 150.0 and channel.names == frozenset({"1"})
    _, actions = board.expire(150.0)
    assert channel.gone == "expired" and actions == []


def test_one_socket_per_channel_grace_and_overlap_allowances() -> None:
    """A handshake supersedes the older socket: 4000 after the grace; the rule counts an
    overlap past 1 s (5 s after a closing notice) while the server has not closed it."""
    board = _board(replace_grace_s=10.0)
    board.create("x", "a", 0.0)
    old = board.open_socket("a", "s1", 0.0)
    assert old is not None
    board.notice(old, 1.0, 60.0)
    board.open_socket("a", "s2", 2.0)
    assert list(board.overlaps(6.9)) == []
    assert list(board.overlaps(7.1)) == [old]
    assert list(board.overlaps(8.0)) == []          # once
    actions = board.due(12.0)
    assert [(x.kind, x.code, x.sock.id) for x in actions if x.kind == "close"] == [
        ("close", 4000, "s1")]
    board2 = _board(replace_grace_s=0.5)
    board2.create("x", "a", 0.0)
    board2.open_socket("a", "s1", 0.0)
    board2.open_socket("a", "s2", 0.0)
    assert [x.code for x in board2.due(0.5)] == [4000]
    assert list(board2.overlaps(2.0)) == []         # the server closed it itself


def test_receivers_coverage_heartbeats_and_pongs() -> None:
    """Notifications go to receiving sockets of channels holding the name; silent sockets get
    none; heartbeats every heartbeat_s; delayed pongs come due."""
    board = _board(heartbeat_s=30.0)
    channel = board.create("x", "a", 0.0).channel
    board.subscribe(channel, ["v2.users.u?presence&routingStatus"], replace=True,
                    ignore_errors=True, now=0.0, check=_ok)
    sock = board.open_socket("a", "s1", 0.0)
    assert sock is not None
    assert [s.id for _, s in board.receivers("x", "v2.users.u.presence")] == ["s1"]
    assert board.covered("x") == {"v2.users.u.presence", "v2.users.u.routingStatus"}
    sock.pong_delay_s, sock.pong_delay_left = 2.0, 1
    assert board.on_ping(sock, 1.0) == "delayed"
    assert [x.kind for x in board.due(3.0)] == ["pong"]
    assert [x.kind for x in board.due(30.0)] == ["heartbeat"]
    board.silence(sock, 31.0, 5.0)
    assert sock.state is SockState.SILENT and board.covered("x") == set()
    assert board.receivers("x", "v2.users.u.presence") == []
    assert [x.kind for x in board.due(36.0)] == ["abort"]


def test_coverage_intervals_start_after_first_coverage_and_merge() -> None:
    """Set-up is not a gap; an interval opens when a covered name stops being covered and
    closes when it is covered again; a client's intervals are the union over names."""
    coverage = Coverage()
    coverage.update("x", set(), 0.0)
    coverage.update("x", {"a", "b"}, 1.0)
    coverage.update("x", {"b"}, 2.0)
    coverage.update("x", set(), 3.0)
    coverage.update("x", {"a", "b"}, 5.0)
    coverage.update("x", {"a"}, 6.0)
    assert coverage.uncovered("x") == [(2.0, 5.0)]
    assert coverage.open("x") == {"b": 6.0}
    assert merge([(0.0, 1.0), (1.0, 2.0), (3.0, 4.0)]) == [(0.0, 2.0), (3.0, 4.0)]


def _store() -> tuple[ActivityStore, Generator]:
    store = ActivityStore()
    org = Org(GcClient("x", "s", queues=2, users=2), random.Random(1))
    generator = Generator(org, random.Random(2), store, 1000.0)
    for n in range(200):
        generator.step(1000.0 + n)
    return store, generator


def test_analytics_lag_is_monotone_and_inserts_repeat_items() -> None:
    """Visibility is now - L and never moves back; inserted items repeat, none is skipped."""
    store, _ = _store()
    query = AnalyticsQuery(lag_s=5.0)
    body = {"interval": "1970-01-01T00:16:40.000Z/1970-01-01T00:20:00.000Z",
            "paging": {"pageSize": 5, "pageNumber": 1}}
    page1 = query.page("x", store, "conversations", body, now=1300.0)
    ids1 = [c["conversationId"] for c in page1["conversations"]]
    body2 = {**body, "paging": {"pageSize": 5, "pageNumber": 2}}
    page2 = query.page("x", store, "conversations", body2, now=1300.0,
                       effect=PageEffect(insert=2, drift=3))
    ids2 = [c["conversationId"] for c in page2["conversations"]]
    assert ids2[:2] == ids1[3:]
    assert page2["totalHits"] == page1["totalHits"] + 2 + 3
    query.set_lag("x", 100.0, 2000.0)
    assert query.visible("x", 1301.0) == 1295.0      # never moves back
    users = query.page("x", store, "users", body, now=1300.0)
    assert len(users["userDetails"]) == 2
    with pytest.raises(ValueError, match="interval"):
        query.page("x", store, "users", {"paging": {}}, now=1300.0)


def test_generator_bodies_carry_the_dedup_key_fields() -> None:
    """Conversation bodies have id; presence modifiedDate and routingStatus.startTime are
    strictly increasing per user."""
    org = Org(GcClient("x", "s", queues=2, users=3), random.Random(1))
    generator = Generator(org, random.Random(3), ActivityStore(), 1000.0)
    stamps: dict[str, list[str]] = {}
    for _ in range(300):
        for note in generator.step(1000.0):   # the same instant: times must still increase
            parsed = parse_topic(note.topic)
            assert parsed is not None
            if parsed.event == "presence":
                stamps.setdefault(note.topic, []).append(note.body["modifiedDate"])
            elif parsed.event == "routingStatus":
                stamps.setdefault(note.topic, []).append(note.body["routingStatus"]["startTime"])
            else:
                assert note.body["id"]
    assert stamps
    for values in stamps.values():
        assert values == sorted(values) and len(set(values)) == len(values)


def test_topic_grammar() -> None:
    """Combined ids expand; only the contract's topics parse; intervals need two times."""
    assert expand("v2.users.u?presence&routingStatus") == ["v2.users.u.presence",
                                                           "v2.users.u.routingStatus"]
    uid = "00000000-0000-4000-8000-000000000000"
    assert parse_topic(f"v2.users.{uid}.presence") is not None
    assert parse_topic(f"v2.users.{uid}.other") is None
    assert parse_topic("v2.users.not-a-uuid.presence") is None
    assert parse_interval("2024-01-15T10:30:00.000Z/2024-01-15T10:31:05.000Z")[1] - \
        parse_interval("2024-01-15T10:30:00.000Z/2024-01-15T10:31:05.000Z")[0] == 65.0
    with pytest.raises(ValueError):
        parse_interval("2024-01-15T10:30:00.000Z")


def test_fault_parsing_and_validation() -> None:
    """Inline, JSON and TOML scripts give the same faults; bad settings name the key."""
    inline = parse_inline("kind=deny_topics,topics=a|b,client=acme")
    assert inline.topics == ("a", "b")
    text = json.dumps([{"kind": "rest_error", "status": 429, "path": "/api/*"}])
    assert parse_script(text)[0] == GcFault("rest_error", status=429, path="/api/*")
    toml = '[[fault]]\nkind = "closing_notice"\ndelay_s = 2\n'
    assert parse_script(toml) == [GcFault("closing_notice", delay_s=2.0)]
    for bad, key in (({"kind": "nope"}, "kind"), ({"kind": "reset", "status": 1}, "status"),
                     ({"kind": "token_error"}, "status"),
                     ({"kind": "token_error", "expires_in": 10}, "expires_in"),
                     ({"kind": "frames", "variant": "x"}, "variant")):
        with pytest.raises(GcFaultError) as info:
            gc_faults.parse_fault(bad)
        assert info.value.where == key
    assert "closing_notice" in gc_faults.describe()


def test_fault_board_counts_answers_and_matches_paths() -> None:
    """Answer faults are consumed per matching call; deny_topics matches globs per client."""
    board = GcFaultBoard()
    board.arm(GcFault("rest_error", status=503, path="/api/v2/analytics/*", count=2))
    assert board.take_rest("c", "GET", "/api/v2/users") is None
    assert board.take_rest("c", "POST", "/api/v2/analytics/users/details/query") is not None
    assert board.take_rest("c", "POST", "/api/v2/analytics/x") is not None
    assert board.take_rest("c", "POST", "/api/v2/analytics/x") is None
    board.arm(GcFault("deny_topics", client="c", topics=("v2.users.*",)))
    assert board.denied("c", "v2.users.u.presence") == ()
    assert board.denied("d", "v2.users.u.presence") is None
    board.arm(GcFault("frames", count=5))
    [armed] = board.socket_faults()
    board.consume(armed)
    assert board.socket_faults() == [] and board.pending() == []
