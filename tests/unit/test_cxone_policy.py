"""The CXone source's pure decisions (docs/cxone.md): records, answers, the schedule, outages
and gaps, acknowledged cursors and the backfill ledger. Hand-made state, injected clock."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from ccstream.timefmt import parse_rfc3339, rfc3339
from connectors.policy.cxone_ledger import (
    PAGE_SIZE,
    BackfillRun,
    CursorMark,
    GapLedger,
    GapMark,
    PollProgress,
    subtract,
)
from connectors.policy.cxone_polling import (
    POLL_TRANSITIONS,
    Action,
    Answered,
    AuthLadder,
    EndpointWatch,
    LoopView,
    PollState,
    PollTransitionError,
    answer_end,
    classify,
    next_poll_at,
    poll_transition,
    process_down,
    route,
    stream_status,
)
from connectors.policy.cxone_records import (
    RowProblem,
    RowRecord,
    h,
    id_text,
    read_body,
    record_of,
    server_epoch,
)
from connectors.policy.lifecycle import TRANSITIONS, SourceStatus

T0 = 1_800_000_000.0
LPT = "2027-01-15T08:00:00.000Z"


def _iso(epoch: float) -> str:
    return rfc3339(epoch)


# -- §4 records --------------------------------------------------------------------------------
def test_h_is_sha256_of_the_canonical_json() -> None:
    """h(x) is the first 16 hex characters of sha256 over sorted, compact, UTF-8 JSON."""
    row = {"b": 1, "a": "é"}
    expected = hashlib.sha256(json.dumps(row, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()[:16]
    assert h(row) == expected and len(h(row)) == 16


@pytest.mark.parametrize(("value", "text"), [("A7", "A7"), (1001, "1001"), ("", None),
                                             (True, None), (1.5, None), (None, None)])
def test_ids_are_strings_as_is_or_integers_in_decimal(value: object, text: str | None) -> None:
    """A JSON string id is taken as is, an integer in decimal; anything else is no id."""
    assert id_text(value) == text


def test_an_agent_row_is_keyed_by_agent_id_with_its_update_time() -> None:
    """agents/states: key agentId, dedup key cxone.agent_state|id|lastUpdateTime, value the
    row's JSON (JSON-equal)."""
    row = {"agentId": 1001, "agentStateName": "Available", "lastUpdateTime": LPT}
    record = record_of("agents/states", row, "2027-01-15T08:00:05.000Z")
    assert isinstance(record, RowRecord)
    assert record.correlation_id == "1001"
    assert record.dedup_key == f"cxone.agent_state|1001|{LPT}"
    assert orjson.loads(record.raw) == row


def test_contact_id_falls_back_to_contactID_only_when_absent() -> None:
    """contacts/active: contactId, else (older API versions) contactID."""
    old = record_of("contacts/active", {"contactID": 55, "lastUpdateTime": LPT}, None)
    assert isinstance(old, RowRecord) and old.dedup_key == f"cxone.contact|55|{LPT}"
    both = record_of("contacts/active", {"contactId": "9", "contactID": 55,
                                         "lastUpdateTime": LPT}, None)
    assert isinstance(both, RowRecord) and both.correlation_id == "9"


def test_a_row_without_its_key_is_a_missing_field_problem() -> None:
    """A row without its id (or with an unusable one) goes to the DLQ as missing_field."""
    for row in ({"lastUpdateTime": LPT}, {"agentId": None}, {"agentId": 1.5}):
        problem = record_of("agents/states", row, LPT)
        assert isinstance(problem, RowProblem)
        assert problem.reason == "missing_field: agentId"
    assert isinstance(record_of("agents/states", [1, 2], LPT), RowProblem)


def test_a_missing_or_non_string_time_is_h_of_the_row() -> None:
    """A missing or non-string lastUpdateTime → h(row) as the timestamp."""
    row: dict[str, Any] = {"contactId": 7, "lastUpdateTime": 12345}
    record = record_of("contacts/active", row, LPT)
    assert isinstance(record, RowRecord) and record.dedup_key == f"cxone.contact|7|{h(row)}"


def test_skill_rows_take_the_answers_poll_time() -> None:
    """skills/activity rows carry no time: the answer's lastPollTime is the timestamp, so a row
    sent again in a later answer is a new record; without a poll time, h(row)."""
    row = {"skillId": 3, "queueCount": 2}
    first = record_of("skills/activity", row, LPT)
    assert isinstance(first, RowRecord)
    assert first.dedup_key == f"cxone.skill_activity|3|{LPT}"
    again = record_of("skills/activity", row, "2027-01-15T08:00:05.000Z")
    assert isinstance(again, RowRecord) and again.dedup_key != first.dedup_key
    bare = record_of("skills/activity", row, None)
    assert isinstance(bare, RowRecord) and bare.dedup_key.endswith(h(row))


def test_completed_contacts_are_their_own_event_type() -> None:
    """contacts/completed rows: cxone.completed_contact|contactId|lastUpdateTime."""
    record = record_of("contacts/completed", {"contactId": 8, "lastUpdateTime": LPT}, None)
    assert isinstance(record, RowRecord)
    assert record.dedup_key == f"cxone.completed_contact|8|{LPT}"


# -- §3 answers ---------------------------------------------------------------------------------
def test_rows_and_poll_time_are_read_from_result_set_then_top_level() -> None:
    """resultSet.X first, then a top-level X, for the rows and for lastPollTime (real CXone
    puts the skills' lastPollTime at the top level)."""
    nested = read_body("agents/states", {"resultSet": {"lastPollTime": LPT,
                                                       "agentStates": [{"agentId": 1}]}})
    assert nested.poll_time == LPT and nested.rows == ({"agentId": 1},) and not nested.problem
    top = read_body("skills/activity", {"lastPollTime": LPT,
                                        "resultSet": {"skillActivity": [{"skillId": 2}]}})
    assert top.poll_time == LPT and len(top.rows) == 1


def test_bad_answers_are_problems_and_an_absent_list_is_no_rows() -> None:
    """A body that is not an object, or a list that is not a list, is unusable (DLQ); an
    absent list is an answer with no rows; an unreadable lastPollTime is none."""
    assert read_body("agents/states", [1]).problem.startswith("not_an_object")
    assert read_body("agents/states", {"resultSet": {"agentStates": "x"}}).problem.startswith(
        "missing_field")
    empty = read_body("contacts/active", {"resultSet": {"lastPollTime": LPT}})
    assert empty.rows == () and empty.poll_time == LPT and not empty.problem
    assert read_body("contacts/active", {"lastPollTime": "yesterday"}).poll_time is None
    completed = read_body("contacts/completed", {"completedContacts": [{"contactId": 1}]})
    assert len(completed.rows) == 1


def test_server_times_without_an_offset_are_utc() -> None:
    """The server's clock is UTC: a time without an offset is read as UTC."""
    assert server_epoch("2027-01-15T08:00:00.000") == server_epoch(LPT)
    assert server_epoch("nonsense") is None and server_epoch(None) is None


# -- §3 the answer table -------------------------------------------------------------------------
def test_successes_go_on_and_reset_the_ladder() -> None:
    """200, 204 and 304 are used; each resets the 401/404 escalations."""
    ladder = AuthLadder()
    assert classify(401, ladder=ladder).action is Action.REFRESH
    assert classify(200, ladder=ladder).outcome == "ok"
    assert classify(304, ladder=ladder).outcome == "not_modified"
    assert classify(204, ladder=ladder).action is Action.OK
    assert classify(401, ladder=ladder).action is Action.REFRESH  # reset: first rung again


def test_401_climbs_new_token_then_rediscovery_then_failure() -> None:
    """401 → new token, retry; 401 again → rediscover, retry; 401 again → the stream fails."""
    ladder = AuthLadder()
    actions = [classify(401, ladder=ladder, what="stream cx: agents/states").action
               for _ in range(3)]
    assert actions == [Action.REFRESH, Action.REDISCOVER, Action.FAIL]
    assert "401" in classify(401, ladder=ladder, what="x").detail


def test_403_fails_and_404_rediscovers_once_then_fails() -> None:
    """403 fails the stream at once; 404 rediscovers once, then fails."""
    assert classify(403, ladder=AuthLadder()).action is Action.FAIL
    ladder = AuthLadder()
    assert classify(404, ladder=ladder).action is Action.REDISCOVER
    assert classify(503, ladder=ladder).action is Action.RETRY   # no success: no reset
    assert classify(404, ladder=ladder).action is Action.FAIL


def test_a_proxy_refusing_its_credentials_fails_and_other_4xx_back_off() -> None:
    """407 (an HTTP proxy's, or a SOCKS refusal read as it) does not heal: the stream fails
    with a line that says where to look; another 4xx backs off under the breaker."""
    refused = classify(407, ladder=AuthLadder(), what="stream cx: agents/states")
    assert refused.action is Action.FAIL and "proxy" in refused.detail
    assert classify(400, ladder=AuthLadder()).action is Action.RETRY


def test_throttling_errors_and_timeouts_back_off_with_the_retry_after() -> None:
    """429, 5xx, timeouts and connection errors back off; Retry-After is the floor; a refused
    connection or a DNS failure also redoes discovery."""
    ladder = AuthLadder()
    throttled = classify(429, ladder=ladder, retry_after_s=2.0)
    assert (throttled.action, throttled.retry_after_s, throttled.outcome) == (
        Action.RETRY, 2.0, "error")
    assert classify(502, ladder=ladder).cause == "server_error"
    timeout = classify(None, ladder=ladder, timed_out=True, error="no answer within 10 s")
    assert timeout.cause == "timeout" and not timeout.rediscover
    refused = classify(None, ladder=ladder, error="ClientConnectorError (http://h/x)")
    assert refused.action is Action.RETRY and refused.rediscover
    assert classify(418, ladder=ladder).action is Action.RETRY


def test_the_next_poll_starts_an_interval_after_the_last_began_or_when_it_ended() -> None:
    """§3: next = max(started + interval, ended)."""
    assert next_poll_at(10.0, 10.3, 5.0) == 15.0
    assert next_poll_at(10.0, 17.0, 5.0) == 17.0


# -- §5 outages and gaps ----------------------------------------------------------------------
def _answered(sent: float, *, end: float, poll_time: str | None, u: str = LPT,
              truncated: bool = False, unchanged: bool = False) -> Answered:
    return Answered(sent, sent + 0.05, u, end, poll_time, truncated, unchanged)


def test_the_first_poll_without_a_cursor_asks_for_the_last_hour_once() -> None:
    """No cursor: u = client now - 1 h, the same u for every retry of the first poll."""
    watch = EndpointWatch("agents/states", 5.0, None, started=0.0, down=False)
    assert watch.since(T0) == _iso(T0 - 3600)
    assert watch.since(T0 + 30) == _iso(T0 - 3600)


def test_the_cursor_is_the_last_poll_time_verbatim_and_a_304_keeps_it() -> None:
    """The next u is the lastPollTime string as received; a 304 and a 200 without one keep
    the cursor."""
    watch = EndpointWatch("agents/states", 5.0, None, started=0.0, down=False)
    odd = "2027-01-15T08:00:00.1230Z"
    watch.answered(_answered(1.0, end=server_epoch(odd) or 0, poll_time=odd))
    assert watch.since(T0) == odd
    watch.answered(_answered(6.0, end=T0, poll_time=None))
    assert watch.since(T0) == odd


def test_an_outage_longer_than_three_intervals_is_a_gap_from_the_cursor() -> None:
    """From one successful answer to the next > 3 x interval: a gap [cursor before, to]."""
    watch = EndpointWatch("contacts/active", 1.0, None, started=0.0, down=False)
    start = parse_rfc3339(LPT) or 0.0
    assert watch.answered(_answered(0.0, end=start, poll_time=LPT)) == []
    assert watch.answered(_answered(1.0, end=start + 1, poll_time=_iso(start + 1))) == []
    later = _iso(start + 6)
    gaps = watch.answered(_answered(5.0, end=start + 6, poll_time=later))
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.start, gap.end, gap.reason, gap.endpoint) == (
        start + 1, start + 6, "poll_failed", "contacts/active")
    assert gap.seconds == pytest.approx(5.0)


def test_an_outage_of_three_intervals_or_less_is_no_gap() -> None:
    """Measured from the send of the last good poll to the receipt of the next: 2.9 x is fine."""
    watch = EndpointWatch("agents/states", 1.0, LPT, started=0.0, down=False)
    assert watch.answered(_answered(2.85, end=T0, poll_time=LPT)) == []


def test_two_answers_more_than_two_intervals_apart_are_a_gap_when_the_second_is_a_200() -> None:
    """§4's resolution: a version current for 2 x interval may begin after one answer and be
    replaced before the next (the server serves current states only), so a spacing over 2 x,
    e.g. polls held by another loop's 429 Retry-After, is a gap [cursor, to] although no poll
    of this endpoint failed and §5's 3 x is not reached."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("skills/activity", 1.0, None, started=0.0, down=False)
    assert watch.answered(_answered(0.0, end=start, poll_time=LPT)) == []
    assert watch.answered(_answered(1.0, end=start + 1, poll_time=_iso(start + 1))) == []
    # held 1.5 s: sent 2.5 s after the last good poll was sent, 2.55 s in all (< 3 x)
    gaps = watch.answered(_answered(3.5, end=start + 3.55, poll_time=_iso(start + 3.55)))
    assert [(g.start, g.end, g.reason, g.endpoint) for g in gaps] == [
        (start + 1, start + 3.55, "poll_failed", "skills/activity")]
    assert watch.answered(_answered(4.5, end=start + 4.55, poll_time=_iso(start + 4.55))) == []


def test_a_spacing_over_two_intervals_ended_by_a_304_is_no_gap() -> None:
    """A 304 says that no row changed since the cursor: no version came and went unseen."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("agents/states", 1.0, LPT, started=0.0, down=False)
    watch.answered(_answered(0.0, end=start + 0.5, poll_time=_iso(start + 0.5)))
    assert watch.answered(_answered(2.5, end=start + 4.0, poll_time=None, unchanged=True)) == []


def test_a_server_clock_step_that_spaces_two_answers_over_two_intervals_is_a_gap() -> None:
    """Versions are timed on the server's clock: a forward step of it lengthens, on that clock,
    the spacing of two answers 1 s apart on ours; over 2 x interval it is a gap."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("skills/activity", 1.0, LPT, started=0.0, down=False)
    watch.answered(_answered(0.0, end=start, poll_time=LPT))
    assert watch.answered(_answered(1.0, end=start + 1.9, poll_time=_iso(start + 1.9))) == []
    gaps = watch.answered(_answered(2.2, end=start + 4.0, poll_time=_iso(start + 4.0)))
    assert [(g.start, g.end) for g in gaps] == [(start + 1.9, start + 4.0)]


def test_an_endpoint_without_a_cursor_has_no_gap_before_its_first_answer() -> None:
    """An endpoint with no cursor has no outage clock until it first answers."""
    watch = EndpointWatch("agents/states", 1.0, None, started=0.0, down=False)
    assert watch.answered(_answered(100.0, end=T0, poll_time=LPT)) == []


def test_after_down_time_an_endpoint_without_a_cursor_has_a_gap_from_its_first_u() -> None:
    """The stream's cursor says it was down, but this endpoint has none (the last run had only
    304s from it, or was killed before its rows were acknowledged): the server answered it and
    replaced versions meanwhile, so its first answer closes a gap over all it asked for."""
    watch = EndpointWatch("contacts/active", 1.0, None, started=0.0, down=True)
    u = watch.since(T0)
    end = T0 + 0.1
    gaps = watch.answered(_answered(0.5, end=end, poll_time=_iso(end), u=u))
    assert [(g.start, g.end, g.reason) for g in gaps] == [(T0 - 3600, end, "process_down")]
    assert watch.answered(_answered(1.5, end=end + 1, poll_time=_iso(end + 1))) == []


def test_failing_from_the_start_with_a_cursor_is_an_outage() -> None:
    """A resumed endpoint's outage clock starts with the source: failing > 3 x is a gap."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("agents/states", 1.0, LPT, started=0.0, down=False)
    gaps = watch.answered(_answered(4.0, end=start + 10, poll_time=_iso(start + 10)))
    assert [g.reason for g in gaps] == ["poll_failed"] and gaps[0].start == start


def test_process_down_time_closes_a_gap_from_the_stored_cursor_at_the_first_answer() -> None:
    """At start, down longer than 3 x interval: each endpoint's first answer closes a gap from
    its cursor (a 304 at its Date + 1 s), once."""
    assert process_down(T0 - 20, T0, 5.0) and not process_down(T0 - 10, T0, 5.0)
    assert not process_down(None, T0, 5.0)
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("skills/activity", 5.0, LPT, started=0.0, down=True)
    end = answer_end(None, start + 60, 0.0)
    gaps = watch.answered(_answered(0.1, end=end, poll_time=None))
    assert [(g.start, g.end, g.reason) for g in gaps] == [(start, start + 61, "process_down")]
    assert watch.answered(_answered(1.0, end=end + 1, poll_time=None)) == []


def test_a_truncated_answer_is_a_gap_from_u_to_its_poll_time_whatever_its_length() -> None:
    """200 + X-Data-Truncated: a gap [u, lastPollTime]."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("agents/states", 5.0, LPT, started=0.0, down=False)
    gaps = watch.answered(_answered(1.0, end=start + 2, poll_time=_iso(start + 2),
                                    truncated=True))
    assert [(g.start, g.end, g.reason) for g in gaps] == [(start, start + 2, "truncated")]


def test_answer_ends_are_the_poll_time_or_the_date_plus_one_second() -> None:
    """§5 ``to``: the lastPollTime of a 200; a 304's Date + 1 s (its fallback without Date)."""
    assert answer_end(LPT, T0, 0.0) == parse_rfc3339(LPT)
    assert answer_end(None, T0, 5.0) == T0 + 1
    assert answer_end(None, None, 5.0) == 6.0


def test_a_rewind_polls_again_from_the_committed_cursor_and_reports_a_gap() -> None:
    """After a Kafka failure the working cursor goes back to the acknowledged one, and the next
    answer closes a gap from it (superseded versions cannot be served again)."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("agents/states", 5.0, LPT, started=0.0, down=False)
    watch.answered(_answered(1.0, end=start + 9, poll_time=_iso(start + 9)))
    watch.rewind(LPT)
    assert watch.since(T0) == LPT
    gaps = watch.answered(_answered(2.0, end=start + 12, poll_time=_iso(start + 12)))
    assert [(g.start, g.end, g.reason) for g in gaps] == [(start, start + 12, "poll_failed")]
    watch.rewind(_iso(start + 12))  # everything acknowledged: nothing lost, no gap
    assert watch.answered(_answered(3.0, end=start + 13, poll_time=_iso(start + 13))) == []


def test_a_rewind_before_any_acknowledgement_reports_from_the_first_answer() -> None:
    """No cursor was ever acknowledged: the gap starts at the first answer's time."""
    start = parse_rfc3339(LPT) or 0.0
    watch = EndpointWatch("skills/activity", 5.0, None, started=0.0, down=False)
    watch.answered(_answered(1.0, end=start, poll_time=LPT))
    watch.rewind(None)
    assert watch.since(T0) == _iso(T0 - 3600)
    gaps = watch.answered(_answered(2.0, end=start + 3, poll_time=_iso(start + 3)))
    assert [(g.start, g.end) for g in gaps] == [(start, start + 3)]


# -- the loop's state machine and the stream's status -------------------------------------------
def test_every_poll_transition_in_the_table_is_allowed_and_others_refused() -> None:
    """The poll loop moves only along its table; FAILED and STOPPED are final."""
    for current, allowed in POLL_TRANSITIONS.items():
        for new in PollState:
            if new is current or new in allowed:
                assert poll_transition(current, new) is new
            else:
                with pytest.raises(PollTransitionError):
                    poll_transition(current, new)
    assert not POLL_TRANSITIONS[PollState.FAILED] and not POLL_TRANSITIONS[PollState.STOPPED]


def test_the_stream_status_folds_the_loops() -> None:
    """Streaming while any endpoint answers; open when every breaker is open; in maintenance
    while one waits out a declared window and none answers; waiting while one backs off;
    connecting before any answer; failed when one failed."""
    ok = LoopView(PollState.IDLE, True)
    backing = LoopView(PollState.BACKOFF, False)
    opened = LoopView(PollState.OPEN, False)
    assert stream_status([ok, backing]) is SourceStatus.STREAMING
    assert stream_status([opened, opened]) is SourceStatus.OPEN
    assert stream_status([opened, backing]) is SourceStatus.WAITING
    assert stream_status([LoopView(PollState.POLLING, None)]) is SourceStatus.CONNECTING
    assert stream_status([ok, LoopView(PollState.FAILED, False)]) is SourceStatus.FAILED
    waiting_out = LoopView(PollState.MAINTENANCE, False)
    assert stream_status([waiting_out, backing]) is SourceStatus.MAINTENANCE
    assert stream_status([waiting_out, opened]) is SourceStatus.MAINTENANCE
    assert stream_status([waiting_out, ok]) is SourceStatus.STREAMING
    assert stream_status([waiting_out, LoopView(PollState.FAILED, False)]) is SourceStatus.FAILED


def test_routes_only_take_allowed_transitions() -> None:
    """Every route is a legal path of lifecycle's table (e.g. open → connecting → waiting)."""
    assert route(SourceStatus.OPEN, SourceStatus.WAITING) == [SourceStatus.CONNECTING,
                                                               SourceStatus.WAITING]
    for current in SourceStatus:
        for target in SourceStatus:
            path = route(current, target)
            previous = current
            for step in path:
                assert step in TRANSITIONS[previous]
                previous = step


# -- §7 acknowledged cursors -------------------------------------------------------------------
def test_a_cursor_advances_only_when_every_earlier_record_is_acknowledged() -> None:
    """A mark takes effect once every record tracked before it is acked, in any order."""
    progress = PollProgress({"agents/states": LPT})
    rows = [progress.track(None) for _ in range(3)]
    progress.mark(CursorMark("agents/states", "B"))
    later = progress.track(None)
    progress.mark(CursorMark("contacts/active", "C"))
    for seq in (rows[2], later, rows[0]):
        progress.ack(seq)
    assert progress.cursors == {"agents/states": LPT}
    progress.ack(rows[1])
    assert progress.cursors == {"agents/states": "B", "contacts/active": "C"}


def test_a_mark_with_nothing_pending_applies_at_once_and_a_failure_blocks_it() -> None:
    """An answer without rows moves the cursor at once; a failed record blocks it until a rewind
    forgets it (and the marks behind it)."""
    progress = PollProgress()
    progress.mark(CursorMark("skills/activity", "A"))
    assert progress.cursors == {"skills/activity": "A"}
    seq = progress.track(None)
    progress.mark(CursorMark("skills/activity", "B"))
    progress.fail(seq)
    assert progress.cursors["skills/activity"] == "A" and progress.pending_marks == 1
    progress.rewind()
    progress.ack(seq)  # a late ack of a forgotten record changes nothing
    assert progress.cursors["skills/activity"] == "A" and progress.pending_marks == 0


def test_a_gap_mark_reports_when_all_its_records_are_acknowledged() -> None:
    """The backfill's mark calls back once its records are in Kafka."""
    done: list[int] = []
    progress = PollProgress(on_gap_done=done.append)
    seq = progress.track(None)
    progress.mark(GapMark(4))
    assert done == []
    progress.ack(seq)
    assert done == [4]


# -- §6 the gap ledger and backfill ---------------------------------------------------------------
def test_subtract_leaves_the_pieces_outside() -> None:
    assert subtract([(0.0, 10.0)], (3.0, 5.0)) == [(0.0, 3.0), (5.0, 10.0)]
    assert subtract([(0.0, 10.0), (20.0, 30.0)], (0.0, 10.0)) == [(20.0, 30.0)]


def test_gaps_merge_and_are_backfilled_oldest_first_after_settling() -> None:
    """Gaps merge; the oldest is due at to + settle_s; one run at a time."""
    ledger = GapLedger([], keep=True, settle_s=60.0)
    ledger.add((200.0, 300.0))
    ledger.add((100.0, 150.0))
    ledger.add((140.0, 160.0))
    assert ledger.open == [(100.0, 160.0), (200.0, 300.0)]
    assert ledger.wait(200.0) == pytest.approx(20.0)
    assert ledger.wait(230.0) == 0.0
    run = ledger.start(0.0)
    assert run.gap == (100.0, 160.0) and ledger.wait(1e9) is None
    with pytest.raises(RuntimeError):
        ledger.start(1.0)


def test_a_gap_leaves_only_when_its_run_finishes_and_an_abandoned_run_is_redone() -> None:
    """finish() removes the run's gap (what merged in later stays); abandon() keeps it open;
    a late finish of an abandoned run changes nothing."""
    ledger = GapLedger([(0.0, 10.0)], keep=True, settle_s=0.0)
    first = ledger.start(0.0)
    ledger.abandon()
    assert ledger.finish(first.number) is None and ledger.open == [(0.0, 10.0)]
    second = ledger.start(1.0)
    ledger.add((8.0, 20.0))
    assert ledger.finish(second.number) is second
    assert ledger.open == [(10.0, 20.0)]


def test_without_backfill_gaps_are_reported_only() -> None:
    """backfill = false or no contacts/active: open_gaps stays empty."""
    ledger = GapLedger([(0.0, 1.0)], keep=False, settle_s=0.0)
    ledger.add((5.0, 6.0))
    assert ledger.open == [] and ledger.wait(100.0) is None


def test_pages_go_by_skip_until_a_short_page() -> None:
    """skip = 0, 100, 200, ... until a page holds fewer than 100 rows (a 204 is empty)."""
    run = BackfillRun(1, (0.0, 1.0), 0.0)
    assert not run.page(PAGE_SIZE) and run.skip == 100
    assert run.page(0) and run.pages == 2 and run.read
