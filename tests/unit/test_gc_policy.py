"""The Genesys Cloud source's decisions, pure: topics, coverage and gaps, the channel machine,
frames and dedup keys (genesys-cloud contract §4-§8). Milliseconds each, no I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from connectors.policy import gc_channel, gc_records, gc_topics
from connectors.policy.gc_channel import (
    Answer,
    ChannelState,
    ChannelTransitionError,
    Ending,
    Event,
    Health,
    classify_answer,
    classify_end,
    covered_until,
    step,
)
from connectors.policy.gc_coverage import Coverage, Gap, GapBook, ReceiptProgress
from connectors.policy.gc_records import Kind, classify
from connectors.policy.gc_topics import TopicError
from connectors.policy.keepalive import Beat

Q1 = "11111111-1111-4111-8111-111111111111"
Q2 = "22222222-2222-4222-8222-222222222222"
U1 = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
U2 = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
MAX = 1_048_576


# -- topics (§4) ----------------------------------------------------------------------------------
def test_templates_expand_over_queues_and_users_in_order_without_duplicates() -> None:
    """{queue} and {user} expand to every id; plain templates stay as written; L is deduplicated."""
    templates = gc_topics.parse_templates("s", [
        "v2.routing.queues.{queue}.conversations", "v2.users.{user}?presence&routingStatus",
        "v2.users.{user}?presence&routingStatus", f"v2.users.{U1}.conversations"])
    assert gc_topics.needs(templates) == {"queue", "user"}
    ids = gc_topics.expand("s", templates, [Q1, Q2], [U1])
    assert ids == [f"v2.routing.queues.{Q1}.conversations",
                   f"v2.routing.queues.{Q2}.conversations",
                   f"v2.users.{U1}?presence&routingStatus", f"v2.users.{U1}.conversations"]


@pytest.mark.parametrize("text", [
    "v2.users.{user}.{queue}", "v2.users.{user}.x.{user}", "v2.users.{id}.presence",
    "v2.users.{user.presence", "v2.users.}x", "", "v2.users.{user}?", "?a&b",
    "v2.users.{user}?presence&"])
def test_bad_templates_are_configuration_errors_naming_the_template(text: str) -> None:
    """Two placeholders, other braces, empty or half-combined templates refuse start."""
    with pytest.raises(TopicError, match=r"stream s: topics\[3\]"):
        gc_topics.parse_template("s", 3, text)


def test_combined_ids_stand_for_their_single_names_and_count_once() -> None:
    """prefix?s1&s2 is one id (one of the channel's 1,000) and two single names."""
    topic = f"v2.users.{U1}?presence&routingStatus"
    assert gc_topics.singles(topic) == [f"v2.users.{U1}.presence", f"v2.users.{U1}.routingStatus"]
    assert gc_topics.singles("v2.x.y") == ["v2.x.y"]
    assert len(gc_topics.pack("s", [topic] * 1000, 1)) == 1


def test_ids_of_200_characters_or_none_at_all_refuse_start() -> None:
    """Each id is shorter than 200 characters (real); templates expanding to nothing fail."""
    template = gc_topics.parse_templates("s", ["v2.users.{user}.presence"])
    gc_topics.expand("s", template, [], ["u" * (199 - len("v2.users..presence"))])
    with pytest.raises(TopicError, match="200"):
        gc_topics.expand("s", template, [], ["u" * (200 - len("v2.users..presence"))])
    with pytest.raises(TopicError, match="no topic"):
        gc_topics.expand("s", template, [], [])


def test_packing_uses_the_fewest_channels_and_refuses_with_the_contract_line() -> None:
    """C = ceil(|L|/1000) channels of <= 1000 ids; C > max_channels is the exact §4 line."""
    ids = [f"t{i}" for i in range(2001)]
    plan = gc_topics.pack("s", ids, 3)
    assert [len(c) for c in plan] == [1000, 1000, 1]
    assert [t for c in plan for t in c] == ids
    with pytest.raises(TopicError) as err:
        gc_topics.pack("main", ids, 2)
    assert str(err.value) == "stream main: 2001 topics need 3 channels, max_channels is 2"


def test_the_streams_of_one_client_share_twenty_channels() -> None:
    """A claim that takes the client's total over 20 is refused and not recorded."""
    budget = gc_topics.ChannelBudget()
    assert budget.claim("a", 15) is None
    assert budget.claim("b", 6) == 21
    assert budget.claim("b", 5) is None
    assert budget.claim("a", 15) is None  # a stream's own claim is replaced, not added
    budget.release("a")
    assert budget.claim("c", 15) is None


@pytest.mark.parametrize(("topics", "kinds"), [
    ([f"v2.routing.queues.{Q1}.conversations"], ("conversations",)),
    ([f"v2.users.{U1}?presence&routingStatus"], ("users",)),
    ([f"v2.users.{U1}.presence", f"v2.users.{U1}.conversations"], ("conversations", "users")),
    ([f"v2.users.{U1}?presence&conversations"], ("conversations", "users")),
])
def test_backfill_kinds_follow_the_topic_list(topics: list[str], kinds: tuple[str, ...]) -> None:
    """§7: conversations unless only presence/routingStatus; users if one of those is there."""
    assert gc_topics.backfill_kinds(topics) == kinds


# -- frames and records (§5, §8) ------------------------------------------------------------------
def h(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def frame(topic: Any, body: Any = None, **extra: Any) -> bytes:
    doc = {"topicName": topic, "version": "2", "metadata": {"CorrelationId": "c"}, **extra}
    if body is not None:
        doc["eventBody"] = body
    return orjson.dumps(doc)


def test_a_queue_conversation_is_keyed_by_its_id_and_hashed() -> None:
    """Key eventBody.id, eventType with UUID segments as {id}, timestamp h(eventBody)."""
    body = {"id": "conv-1", "participants": [{"name": "Zoë"}]}
    got = classify(frame(f"v2.routing.queues.{Q1}.conversations", body), False, MAX)
    assert got.kind is Kind.EVENT and got.correlation_id == "conv-1"
    assert got.dedup_key == f"v2.routing.queues.{{id}}.conversations|conv-1|{h(body)}"


def test_presence_and_routing_status_use_their_own_times() -> None:
    """presence: eventBody.modifiedDate; routingStatus: eventBody.routingStatus.startTime."""
    presence = classify(frame(f"v2.users.{U1}.presence",
                              {"modifiedDate": "2024-01-15T10:30:00.000Z"}), False, MAX)
    assert presence.dedup_key == f"v2.users.{{id}}.presence|{U1}|2024-01-15T10:30:00.000Z"
    routing = classify(frame(f"v2.users.{U2}.routingStatus", {"routingStatus": {
        "startTime": "2024-01-15T10:31:00.000Z"}}), False, MAX)
    assert routing.dedup_key == f"v2.users.{{id}}.routingStatus|{U2}|2024-01-15T10:31:00.000Z"


@pytest.mark.parametrize("body", [{"modifiedDate": 17}, {}, {"routingStatus": "x"}])
def test_a_missing_or_odd_time_falls_back_to_the_hash(body: dict[str, Any]) -> None:
    """§8: a presence/routingStatus time that is missing or not a string is h(eventBody)."""
    for event in ("presence", "routingStatus"):
        got = classify(frame(f"v2.users.{U1}.{event}", body), False, MAX)
        assert got.dedup_key == f"v2.users.{{id}}.{event}|{U1}|{h(body)}"


def test_keys_fall_back_to_the_first_uuid_then_the_topic() -> None:
    """No eventBody.id: the first UUID in topicName; none: topicName itself."""
    assert gc_records.correlation_id(f"v2.users.{U1}.x.{U2}", {"id": ""}) == U1
    assert gc_records.correlation_id("v2.simulator.unknown", {"id": 7}) == "v2.simulator.unknown"
    assert gc_records.event_type(f"v2.users.{U1}.x{U2}") == f"v2.users.{{id}}.x{U2}"


def test_h_is_pythons_canonical_json() -> None:
    """h(x): sorted keys, no spaces, non-ASCII as UTF-8, first 16 hex of sha256."""
    value = {"b": [1, 2.5, None], "a": "é€", "c": {"z": True, "y": "\u2028"}}
    assert gc_records.h(value) == h(value)
    assert len(gc_records.h("x")) == 16


@pytest.mark.parametrize(("raw", "kind"), [
    (frame("channel.metadata", {"message": "WebSocket Heartbeat"}), Kind.HEARTBEAT),
    (frame("channel.metadata", {"message": "pong"}), Kind.PONG),
    (frame("channel.metadata", {"message": "something else"}), Kind.IGNORED),
    (frame("channel.metadata"), Kind.IGNORED),
    (frame("v2.system.socket_closing", {"reason": "maintenance"}), Kind.CLOSING),
    (frame("v2.system.other", {"x": 1}), Kind.IGNORED),
    (orjson.dumps({"result": "404", "message": "gone"}), Kind.GONE),
    (orjson.dumps({"result": "200"}), Kind.IGNORED),
    (frame("v2.simulator.unknown.topic", {"id": "x"}, extraField=1), Kind.EVENT),
])
def test_every_row_of_the_frame_table(raw: bytes, kind: Kind) -> None:
    """§5: heartbeat, pong, notice, 404, the ignored ones, and events on any topic."""
    assert classify(raw, False, MAX).kind is kind


@pytest.mark.parametrize(("raw", "binary", "reason"), [
    (b'{"topicName": ', False, "not_json"),
    (b"[1, 2]", False, "not_an_object"),
    (b'{"topicName": "v2.x", "eventBody": "\xff"}', False, "invalid_utf8"),
    (frame("v2.x", {"id": "1"}), True, "binary_frame"),
    (frame("v2.x"), False, "not_an_event"),
    (frame("v2.x", [1]), False, "not_an_event"),
    (orjson.dumps({"eventBody": {}}), False, "not_an_event"),
    (frame(7, {"id": "1"}), False, "not_an_event"),
    (frame("v2.x", {"pad": "x" * 2000}), False, "frame_too_large"),
])
def test_frames_matching_no_row_go_to_the_dlq_with_a_reason(raw: bytes, binary: bool,
                                                             reason: str) -> None:
    """Bad input is a DLQ record with its reason (the stream goes on)."""
    got = classify(raw, binary, 1024)
    assert got.kind is Kind.BAD and got.reason.startswith(reason)


def test_backfill_records_are_keyed_by_their_id_and_hashed() -> None:
    """One record per conversation/user: key conversationId/userId, timestamp h(record);
    without its id (or not an object) it goes to the DLQ."""
    conversation = {"conversationId": "c1", "conversationStart": "2024-01-15T10:30:00.000Z"}
    got = gc_records.backfill_record("conversations", conversation)
    assert got.kind is Kind.EVENT and got.correlation_id == "c1"
    assert got.dedup_key == f"backfill.conversation|c1|{h(conversation)}"
    user = {"userId": U1, "primaryPresence": []}
    assert gc_records.backfill_record("users", user).dedup_key == f"backfill.user|{U1}|{h(user)}"
    assert gc_records.backfill_record("users", {"primaryPresence": []}).kind is Kind.BAD
    assert gc_records.backfill_record("conversations", "c1").kind is Kind.BAD


# -- the channel machine (§3-§5) ------------------------------------------------------------------
def test_the_transition_table_is_walked_from_new_through_every_state() -> None:
    """Every state is reachable from NEW, every live state can stop and fail, and every event
    outside the table is refused."""
    reached, todo = {ChannelState.NEW}, [ChannelState.NEW]
    while todo:
        state = todo.pop()
        for nxt in gc_channel.TRANSITIONS[state]:
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    assert reached == set(ChannelState)
    for state in ChannelState:
        for event in Event:
            if (state, event) in gc_channel.TABLE:
                assert step(state, event) is gc_channel.TABLE[(state, event)]
            else:
                with pytest.raises(ChannelTransitionError):
                    step(state, event)
    for state in gc_channel.LIVE:
        assert step(state, Event.STOP) is ChannelState.STOPPED
        assert step(state, Event.FATAL) is ChannelState.FAILED
    assert not gc_channel.TRANSITIONS[ChannelState.STOPPED]
    assert not gc_channel.TRANSITIONS[ChannelState.FAILED]


@pytest.mark.parametrize(("events", "end"), [
    # set-up, a closing notice and its make-before-break, a rollover
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.CLOSING_NOTICE,
      Event.SWITCH_FAILED, Event.SWITCHED, Event.ROLLED_OVER], ChannelState.OPEN),
    # a reset: backoff, HEAD 200, the same channel
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.CLOSED, Event.BACKOFF_OVER,
      Event.HEAD_OK, Event.CONNECTED], ChannelState.OPEN),
    # a reset, then HEAD 404: a new channel
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.CLOSED, Event.BACKOFF_OVER,
      Event.GONE], ChannelState.NEW),
    # 4000 on the current socket, a 404 frame, a subscription 404: each a new channel
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.REPLACED], ChannelState.NEW),
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.GONE], ChannelState.NEW),
    ([Event.CREATED, Event.GONE], ChannelState.NEW),
    # S ends before S' opens: the ordinary path
    ([Event.CREATED, Event.SUBSCRIBED, Event.CONNECTED, Event.CLOSING_NOTICE, Event.CLOSED],
     ChannelState.WAITING),
])
def test_the_contract_paths_through_the_machine(events: list[Event], end: ChannelState) -> None:
    """The §5 "client sees" rows, as walks of the table."""
    state = ChannelState.NEW
    for event in events:
        state = step(state, event)
    assert state is end


@pytest.mark.parametrize(("kwargs", "ending"), [
    ({"current": False, "code": 4000}, Ending.SUPERSEDED),
    ({"current": True, "code": 4000}, Ending.REPLACED),
    ({"current": True, "code": 1000, "gone_frame": True}, Ending.GONE),
    ({"current": True, "code": 1001}, Ending.CLOSED),
    ({"current": True, "code": None}, Ending.CLOSED),
    ({"current": True, "code": None, "dead": True}, Ending.DEAD),
    ({"current": True, "code": 4000, "stopping": True}, Ending.SHUTDOWN),
])
def test_what_an_ending_means(kwargs: dict[str, Any], ending: Ending) -> None:
    """4000 on a superseded socket is nothing; on the current one, replaced; a 404 frame first
    is gone; 1001, other codes, resets are closed; a failed health check is dead."""
    args = {"stopping": False, "gone_frame": False, "dead": False, **kwargs}
    assert classify_end(**args) is ending


def test_coverage_ends_at_the_close_or_404_frame_else_at_the_last_frame() -> None:
    """§6: until the close frame or 404 frame; a reset or a dead socket: its last frame."""
    assert covered_until(close_frame_at=9.0, gone_frame_at=None, last_frame_at=5.0,
                         dead=False) == 9.0
    assert covered_until(close_frame_at=9.0, gone_frame_at=7.0, last_frame_at=7.0,
                         dead=False) == 7.0
    assert covered_until(close_frame_at=None, gone_frame_at=None, last_frame_at=5.0,
                         dead=False) == 5.0
    assert covered_until(close_frame_at=9.0, gone_frame_at=None, last_frame_at=5.0,
                         dead=True) == 5.0


@pytest.mark.parametrize(("status", "answer"), [
    (200, Answer.OK), (204, Answer.OK), (429, Answer.HOLD), (401, Answer.AUTH),
    (404, Answer.NOT_FOUND), (500, Answer.RETRY), (503, Answer.RETRY), (None, Answer.RETRY),
    (400, Answer.FATAL), (403, Answer.FATAL), (409, Answer.FATAL),
])
def test_what_a_rest_answer_means(status: int | None, answer: Answer) -> None:
    """§3: 429 hold, 401 one new token, 404 gone, 5xx/no answer backoff, 400/403 fail."""
    assert classify_answer(status) is answer


def test_the_health_check_pings_after_silence_and_declares_death_after_the_timeout() -> None:
    """No frame for health_after_s: ping; nothing health_timeout_s after it: dead; any frame
    resets both."""
    health = Health(35.0, 5.0, now=100.0)
    assert health.next(110.0).beat is Beat.WAIT and health.next(110.0).at == 135.0
    health.inbound(120.0)
    assert health.next(150.0).beat is Beat.WAIT
    assert health.next(155.0).beat is Beat.PING
    health.ping_sent(155.0)
    assert health.next(157.0).beat is Beat.WAIT and health.next(157.0).at == 160.0
    assert health.next(160.0).beat is Beat.DEAD
    health.inbound(158.0)
    assert health.next(160.0).beat is Beat.WAIT


def test_rollover_is_due_a_fixed_time_after_the_last_put() -> None:
    """channel_rollover_s after the last successful PUT."""
    rollover = gc_channel.Rollover(82_800.0)
    assert rollover.due_in(1000.0, 1000.0) == 82_800.0
    assert rollover.due_in(1000.0, 90_000.0) == 0.0


# -- coverage and gaps (§6) -------------------------------------------------------------------
def test_no_cursor_no_gap_then_a_reset_is_a_gap_with_margins() -> None:
    """Set-up is not a gap; a drop from the last frame to the next handshake is [a-2, b+2]."""
    cov = Coverage(1, watermark=None)
    assert cov.watermark(None) is None
    assert cov.opened(0, 1, 100.0) is None
    cov.seen(0, 1, 110.0)
    assert cov.watermark(None) == 110.0
    assert cov.closed(0, 1, 110.0, "socket_closed") is None
    assert cov.watermark(None) == 110.0  # held at the open gap's start (never moves back)
    assert cov.opened(0, 2, 115.0) == Gap(108.0, 117.0, "socket_closed")
    assert cov.covered()


def test_make_before_break_leaves_no_gap() -> None:
    """S' opened before S closed: the slot never loses coverage."""
    cov = Coverage(1, watermark=None)
    cov.opened(0, 1, 100.0)
    assert cov.opened(0, 2, 120.0) is None
    assert cov.closed(0, 1, 121.0, "socket_closed") is None
    assert cov.covered()
    assert cov.closed(0, 2, 130.0, "socket_dead") is None
    assert not cov.covered()


def test_a_socket_found_dead_after_its_successor_opened_leaves_a_hole() -> None:
    """S's last frame before S' handshake: the hole between them is a gap at once."""
    cov = Coverage(1, watermark=None)
    cov.opened(0, 1, 100.0)
    cov.opened(0, 2, 120.0)
    assert cov.closed(0, 1, 110.0, "socket_dead") == Gap(108.0, 122.0, "socket_dead")


def test_a_cursor_makes_down_time_the_first_gap() -> None:
    """With a cursor the first gap is [watermark - 2, first covered + 2], process_down."""
    cov = Coverage(2, watermark=1000.0)
    assert cov.watermark(None) == 1000.0
    assert cov.opened(0, 1, 1010.0) is None  # the other slot is still uncovered
    assert cov.opened(1, 1, 1012.0) == Gap(998.0, 1014.0, "process_down")
    assert cov.watermark(None) == 1010.0  # slot 0 is known covered to its last frame only


def test_gaps_of_several_slots_are_one_stretch_while_any_is_uncovered() -> None:
    """An instant is covered when every slot is: overlapping drops make one gap, from the first
    loss to the last recovery, with the first cause."""
    cov = Coverage(2, watermark=None)
    cov.opened(0, 1, 0.0)
    cov.opened(1, 1, 0.0)
    cov.closed(1, 1, 20.0, "replaced")
    cov.closed(0, 1, 10.0, "socket_dead")  # found later, lost earlier
    assert cov.opened(1, 2, 25.0) is None
    assert cov.watermark(None) == 8.0
    assert cov.opened(0, 2, 30.0) == Gap(8.0, 32.0, "socket_dead")


def test_a_slot_of_only_rejected_topics_is_out_of_coverage() -> None:
    """Dropping an uncovered slot closes the gap it held open; required again, it counts
    from its next coverage."""
    cov = Coverage(2, watermark=None)
    cov.opened(0, 1, 0.0)
    cov.opened(1, 1, 0.0)
    cov.closed(1, 1, 5.0, "channel_gone")
    assert cov.required(1, False, 9.0) == Gap(3.0, 11.0, "channel_gone")
    assert cov.covered()
    assert cov.required(1, True, 12.0) is None
    assert cov.covered()


def test_the_watermark_waits_for_kafka_and_for_the_last_frame() -> None:
    """W <= the oldest unacknowledged live record; an open socket covers up to its last
    frame only; W never moves back."""
    cov = Coverage(1, watermark=None)
    cov.opened(0, 1, 100.0)
    cov.seen(0, 1, 150.0)
    assert cov.watermark(oldest_unacked=120.0) == pytest.approx(119.999)
    assert cov.watermark(oldest_unacked=None) == 150.0
    assert cov.watermark(oldest_unacked=90.0) == 150.0


def test_receipt_progress_holds_the_oldest_unacknowledged_receipt() -> None:
    """Live records are tracked by receipt; the oldest one not acknowledged holds W."""
    progress = ReceiptProgress()
    first = progress.track(10.0, 10.0)
    second = progress.track(11.0, 11.0)
    progress.track(None)  # a DLQ record: no receipt position
    assert progress.oldest_pending() == 10.0
    progress.ack(second)
    assert progress.oldest_pending() == 10.0
    progress.ack(first)
    assert progress.oldest_pending() is None and not progress.settled()
    assert progress.resume_point() is None and progress.replay_anchor() is None


def test_the_gap_book_fills_oldest_first_one_at_a_time_after_settling() -> None:
    """Due once to + settle_s passed; one active gap; merged overlaps; an aborted gap comes
    back whole; a done one leaves open_gaps."""
    book = GapBook([(50.0, 60.0)])
    book.add((10.0, 20.0))
    book.add((18.0, 25.0))
    assert book.open_gaps() == [(10.0, 25.0), (50.0, 60.0)]
    assert book.due(29.0, 5.0) is None and book.next_due_at(5.0) == 30.0
    gap = book.due(30.0, 5.0)
    assert gap == (10.0, 25.0)
    book.start(gap)
    assert book.due(100.0, 5.0) is None  # one at a time
    book.abort()
    assert book.open_gaps() == [(10.0, 25.0), (50.0, 60.0)]
    book.start((10.0, 25.0))
    book.done()
    assert book.open_gaps() == [(50.0, 60.0)]
