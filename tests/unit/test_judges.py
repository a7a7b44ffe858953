"""The real platforms' judges on hand-made ledgers and records: each rule catches its planted loss.

``cxone.md`` s.9 and ``genesys-cloud.md`` s.11: a complete run passes; removing one record (or
one reported gap) that a rule protects fails exactly that rule; duplicates in clean are caught.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from ccstream.timefmt import rfc3339
from devtools.judges import Evidence, Rec, Reported, contained, merge, uncovered_parts
from devtools.judges_cxone import CxoneSpec, judge_cxone
from devtools.judges_gc import GcSpec, judge_gc

T0 = 1_767_000_000.0   # an epoch second; every time below is T0 + offset


def t(offset: float) -> str:
    return rfc3339(T0 + offset)


def canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rec(stream: str, dedup: str, value: bytes, source: str = "live",
        gap: tuple[float, float] | None = None) -> Rec:
    headers = [("ccstream-stream", stream.encode()), ("ccstream-dedup-key", dedup.encode()),
               ("ccstream-source", source.encode())]
    if gap is not None:
        headers.append(("ccstream-gap", f"{t(gap[0])}/{t(gap[1])}".encode()))
    return Rec.of(dedup.split("|")[1].encode(), value, headers)


def gap_line(stream: str, a: float, b: float, reason: str = "process_down") -> dict[str, Any]:
    return {"event": "stream.gap", "stream": stream, "from": t(a), "to": t(b),
            "seconds": b - a, "reason": reason}


# -- intervals ----------------------------------------------------------------------------------
def test_interval_helpers_are_closed_and_merged() -> None:
    """Touching intervals merge; containment honours the tolerance; uncovered parts are exact."""
    assert merge([(5, 6), (1, 2), (2, 3)]) == [(1, 3), (5, 6)]
    assert contained((1, 4), [(1, 2), (2, 4)])
    assert not contained((0.5, 4), [(1, 4)])
    assert contained((0.5, 4.5), [(1, 4)], tolerance_s=0.5)
    assert uncovered_parts((0, 10), [(2, 3), (5, 6)]) == [(0, 2), (3, 5), (6, 10)]
    assert uncovered_parts((0, 10), [(-1, 11)]) == []


def test_reported_gaps_read_from_log_lines_and_cursor() -> None:
    """Only ``stream.gap`` lines of the stream count; the cursor's open gaps join the union."""
    lines = [gap_line("s", 0, 5), gap_line("other", 20, 30), {"event": "ws.connected"},
             gap_line("s", 4, 8, "socket_closed")]
    reported = Reported.of(lines, [[t(40), t(45)]], "s")
    assert reported.union == [(T0, T0 + 8), (T0 + 40, T0 + 45)]
    assert reported.reasons == {"process_down": 1, "socket_closed": 1}


# -- CXone --------------------------------------------------------------------------------------
CX = "cx"
CX_SPEC = CxoneSpec(stream=CX, access_key="AK1", poll_interval_s=1.0, settle_s=10.0)
SKILL_ROW = {"skillId": 4001, "agentsAvailable": 2, "contactsQueued": 1}


def version(endpoint: str, key: str, start: float, end: float | None,
            row: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"endpoint": endpoint, "key": key, "lastUpdateTime": t(start),
            "current_from": t(start), "current_to": None if end is None else t(end),
            "sha256": sha(canon(row or {"k": key, "at": start})), "answered": 1}


def cx_ledger(outages: list[tuple[str, float, float]] | None = None) -> dict[str, Any]:
    versions = [
        version("agents/states", "1001", 1, 10),       # 9 s: judged
        version("agents/states", "1001", 10, None),     # current to the end: judged
        version("agents/states", "1002", 3, 4),         # 1 s < 2 x poll: not judged
        version("contacts/active", "100001", 2, 30),
        version("skills/activity", "4001", 1, None, SKILL_ROW),
    ]
    completed = [{"contactId": "100002", "completed_at": t(31), "visible_at": t(33),
                  "sha256": "x", "relisted": 0}]
    answers = {e: {"count": 60, "first": t(0), "last": t(60)}
               for e in ("agents/states", "contacts/active", "skills/activity")}
    by_endpoint: dict[str, list[dict[str, Any]]] = {e: [] for e in answers}
    for endpoint, a, b in outages or [("contacts/active", 30, 36)]:
        by_endpoint[endpoint].append({"from": t(a), "to": t(b), "seconds": b - a})
    return {"min_outage_s": 1.0, "access_keys": {"AK1": {
        "versions": versions, "completed": completed, "answers": answers,
        "outages": by_endpoint}}}


def cx_raw(skip: str | None = None) -> list[Rec]:
    """A complete run's raw records (``skip``: the dedup key prefix of one to leave out)."""
    records = [
        rec(CX, f"cxone.agent_state|1001|{t(1)}", b'{"agentId":1001}'),
        rec(CX, f"cxone.agent_state|1001|{t(10)}", b'{"agentId":1001}'),
        rec(CX, f"cxone.contact|100001|{t(2)}", b'{"contactId":100001}'),
        # JSON-equal to the ledger's row, serialised differently
        rec(CX, f"cxone.skill_activity|4001|{t(5)}", orjson.dumps(SKILL_ROW,
                                                                  option=orjson.OPT_INDENT_2)),
        rec(CX, f"cxone.completed_contact|100002|{t(31)}", b'{"contactId":100002}', "backfill",
            (30, 36)),
    ]
    return [r for r in records if skip is None or not (r.dedup_key or "").startswith(skip)]


def cx_evidence(raw: list[Rec] | None = None, lines: list[dict[str, Any]] | None = None,
                open_gaps: list[list[str]] | None = None, shutdown: float = 90.0,
                clean: list[Rec] | None = None, rules: dict[str, int] | None = None) -> Evidence:
    raw = cx_raw() if raw is None else raw
    return Evidence(raw=raw, clean=raw if clean is None else clean,
                    gap_lines=[gap_line(CX, 30, 36, "poll_failed")] if lines is None else lines,
                    open_gaps=open_gaps or [], shutdown_at=T0 + shutdown, rules=rules or {})


def test_cxone_complete_run_passes() -> None:
    """Every judged version, completion and outage accounted for: ok, with the counts."""
    verdict = judge_cxone(cx_ledger(), CX_SPEC, cx_evidence())
    assert verdict.ok, verdict.to_json()
    assert verdict.counts["versions_judged"] == 4
    assert verdict.counts["completions_judged"] == 1
    assert verdict.counts["outages_judged"] == 1
    assert (verdict.counts["live"], verdict.counts["backfill"], verdict.counts["gaps"]) == (4, 1, 1)


def test_cxone_rule1_catches_a_missing_version() -> None:
    """A version current for >= 2 x poll_interval outside every gap with no raw record: lost (1)."""
    verdict = judge_cxone(cx_ledger(), CX_SPEC,
                          cx_evidence(cx_raw(skip=f"cxone.agent_state|1001|{t(10)}")))
    assert verdict.lost_by_rule() == {1: 1, 2: 0, 3: 0}
    assert verdict.lost[0].item == f"agents/states 1001 @ {t(10)}"


def test_cxone_rule1_matches_skills_by_json_equal_row() -> None:
    """A skill record whose row differs from the version's (a counter moved) does not count."""
    raw = [*cx_raw(skip="cxone.skill_activity"),
           rec(CX, f"cxone.skill_activity|4001|{t(5)}", canon({**SKILL_ROW, "contactsQueued": 2}))]
    verdict = judge_cxone(cx_ledger(), CX_SPEC, cx_evidence(raw))
    assert [loss.item for loss in verdict.lost] == [f"skills/activity 4001 @ {t(1)}"]


def test_cxone_rule1_spares_versions_hidden_by_a_gap_and_not_outside() -> None:
    """A gap covering all but 1.5 s of a version excuses it; one leaving 2 s clear does not."""
    raw = cx_raw(skip=f"cxone.agent_state|1001|{t(1)}")
    hidden = cx_evidence(raw, lines=[gap_line(CX, 30, 36), gap_line(CX, 2.5, 12)])
    assert judge_cxone(cx_ledger(), CX_SPEC, hidden).ok
    clear = cx_evidence(raw, lines=[gap_line(CX, 30, 36), gap_line(CX, 3.0, 12)])
    assert judge_cxone(cx_ledger(), CX_SPEC, clear).lost_by_rule()[1] == 1


def test_cxone_rule2_catches_a_completion_missing_from_a_judged_gap() -> None:
    """A contact completed inside a gap older than settle_s + 30 s, not in raw: lost (2)."""
    verdict = judge_cxone(cx_ledger(), CX_SPEC,
                          cx_evidence(cx_raw(skip="cxone.completed_contact")))
    assert verdict.lost_by_rule() == {1: 0, 2: 1, 3: 0}
    assert "100002" in verdict.lost[0].item


def test_cxone_rule2_defers_a_late_gap_only_if_it_is_still_open() -> None:
    """A gap too recent to judge must be in open_gaps; dropped from the cursor, it is judged."""
    raw = cx_raw(skip="cxone.completed_contact")
    late_open = cx_evidence(raw, open_gaps=[[t(30), t(36)]], shutdown=70.0)
    verdict = judge_cxone(cx_ledger(), CX_SPEC, late_open)
    assert verdict.ok and verdict.counts["gaps_deferred"] == 1
    late_dropped = cx_evidence(raw, shutdown=70.0)
    assert judge_cxone(cx_ledger(), CX_SPEC, late_dropped).lost_by_rule()[2] == 1


def test_cxone_rule2_applies_only_with_backfill_and_contacts() -> None:
    """Without backfill (or without contacts/active) completions are not judged."""
    raw = cx_raw(skip="cxone.completed_contact")
    spec = CxoneSpec(stream=CX, access_key="AK1", poll_interval_s=1.0, settle_s=10.0,
                     backfill=False)
    assert judge_cxone(cx_ledger(), spec, cx_evidence(raw)).ok


def test_cxone_rule3_catches_an_outage_outside_the_reported_gaps() -> None:
    """An outage over 3 x poll_interval not inside the gaps: lost (3); 1 s of slack allowed."""
    ledger = cx_ledger([("contacts/active", 30, 36), ("agents/states", 40, 45)])
    verdict = judge_cxone(ledger, CX_SPEC, cx_evidence())
    assert verdict.lost_by_rule() == {1: 0, 2: 0, 3: 1}
    assert "agents/states outage" in verdict.lost[0].item
    slack = cx_evidence(lines=[gap_line(CX, 30, 36), gap_line(CX, 40.9, 44.1)])
    assert judge_cxone(ledger, CX_SPEC, slack).ok
    short = cx_evidence(lines=[gap_line(CX, 30, 36), gap_line(CX, 41.5, 44)])
    assert judge_cxone(ledger, CX_SPEC, short).lost_by_rule()[3] == 1


def test_cxone_rule3_ignores_short_outages() -> None:
    """An outage of at most 3 x poll_interval is no gap."""
    ledger = cx_ledger([("contacts/active", 30, 36), ("agents/states", 40, 43)])
    assert judge_cxone(ledger, CX_SPEC, cx_evidence()).ok


def test_cxone_duplicates_and_rule_breaks_fail_the_verdict() -> None:
    """Two clean records of one dedup key, or a rule the server counted, fail the run."""
    raw = cx_raw()
    verdict = judge_cxone(cx_ledger(), CX_SPEC, cx_evidence(raw, clean=[*raw, raw[0]]))
    assert not verdict.ok and list(verdict.duplicated.values()) == [2]
    broke = judge_cxone(cx_ledger(), CX_SPEC, cx_evidence(rules={"early_request": 1}))
    assert not broke.ok and not broke.lost


def test_cxone_records_of_another_stream_do_not_count() -> None:
    """The judge reads only its stream's records."""
    other = [Rec.of(r.key, r.value, [(k, b"other" if k == "ccstream-stream" else v)
                                     for k, v in r.headers]) for r in cx_raw()]
    verdict = judge_cxone(cx_ledger(), CX_SPEC, cx_evidence(other))
    assert verdict.lost_by_rule()[1] == 4


# -- Genesys Cloud ------------------------------------------------------------------------------
GC = "gc"
TOPICS = ("v2.routing.queues.{queue}.conversations", "v2.users.{user}?presence&routingStatus")
GC_SPEC = GcSpec(stream=GC, client_id="acme", topics=TOPICS, settle_s=10.0)
CONV, USER = "c0ffee00-0000-4000-8000-000000000001", "5e500000-0000-4000-8000-000000000002"
FRAMES = [orjson.dumps({"topicName": "v2.routing.queues.q.conversations", "n": n,
                        "eventBody": {"id": CONV}}) for n in range(3)]


def gc_ledger() -> dict[str, Any]:
    notes = [{"topicName": "v2.routing.queues.q.conversations", "sent_at": T0 + at,
              "channel": "ch1", "socket": "s1", "sha256": sha(frame)}
             for at, frame in zip((5.0, 21.0, 40.0), FRAMES, strict=True)]
    return {"clients": {"acme": {
        "notifications_count": 3, "notifications": notes,
        "uncovered": [[T0 + 20.5, T0 + 24.0]], "uncovered_open": None,
        "conversations": [
            {"conversationId": CONV, "start": T0 + 18, "end": T0 + 22, "queueId": "q",
             "userIds": [], "segments": [[T0 + 18, T0 + 22]]},
            {"conversationId": "later", "start": T0 + 30, "end": None, "queueId": "q",
             "userIds": [], "segments": [[T0 + 30, None]]},
        ],
        "users": [{"userId": USER, "presence": [[T0, None, "OFFLINE"]], "routingStatus": []}],
    }}}


def gc_raw(skip: str | None = None, conv_gap: tuple[float, float] = (18.5, 26.0)) -> list[Rec]:
    records = [rec(GC, f"v2.routing.queues.{{id}}.conversations|{CONV}|h{n}", frame)
               for n, frame in enumerate(FRAMES)]
    records += [
        rec(GC, f"backfill.conversation|{CONV}|b1", canon({"conversationId": CONV}), "backfill",
            conv_gap),
        rec(GC, f"backfill.user|{USER}|b2", canon({"userId": USER}), "backfill", (18.5, 26.0)),
    ]
    return [r for r in records if skip is None or not (r.dedup_key or "").startswith(skip)]


def gc_evidence(raw: list[Rec] | None = None, lines: list[dict[str, Any]] | None = None,
                open_gaps: list[list[str]] | None = None, shutdown: float = 90.0) -> Evidence:
    raw = gc_raw() if raw is None else raw
    return Evidence(raw=raw, clean=raw,
                    gap_lines=[gap_line(GC, 18.5, 26.0, "socket_closed")] if lines is None
                    else lines, open_gaps=open_gaps or [], shutdown_at=T0 + shutdown)


def test_gc_complete_run_passes() -> None:
    """Notifications outside gaps in raw, the activity backfilled, the hole reported: ok."""
    verdict = judge_gc(gc_ledger(), GC_SPEC, gc_evidence())
    assert verdict.ok, verdict.to_json()
    assert verdict.counts["notifications_judged"] == 2
    assert verdict.counts["notifications_in_gaps"] == 1
    assert (verdict.counts["conversations_judged"], verdict.counts["users_judged"]) == (1, 1)


def test_gc_rule1_catches_a_notification_missing_outside_gaps() -> None:
    """A notification written outside every gap whose bytes are in no raw record: lost (1)."""
    raw = [r for r in gc_raw() if r.value != FRAMES[2]]
    verdict = judge_gc(gc_ledger(), GC_SPEC, gc_evidence(raw))
    assert verdict.lost_by_rule() == {1: 1, 2: 0, 3: 0}
    assert "sent_at" in verdict.lost[0].item
    # the one written inside the gap is not judged
    inside = [r for r in gc_raw() if r.value != FRAMES[1]]
    assert judge_gc(gc_ledger(), GC_SPEC, gc_evidence(inside)).ok


def test_gc_rule1_compares_bytes_not_json() -> None:
    """The same notification re-serialised is not the bytes the server wrote."""
    raw = [r for r in gc_raw() if r.value != FRAMES[0]]
    raw.append(rec(GC, "v2.x|y|z", orjson.dumps(orjson.loads(FRAMES[0]),
                                                option=orjson.OPT_INDENT_2)))
    assert judge_gc(gc_ledger(), GC_SPEC, gc_evidence(raw)).lost_by_rule()[1] == 1


def test_gc_rule2_catches_activity_not_backfilled() -> None:
    """A conversation active in an uncovered interval with no backfill record: lost (2)."""
    verdict = judge_gc(gc_ledger(), GC_SPEC, gc_evidence(gc_raw(skip="backfill.conversation")))
    assert verdict.lost_by_rule() == {1: 0, 2: 1, 3: 0}
    assert verdict.lost[0].item == f"conversation {CONV}"


def test_gc_rule2_needs_a_gap_overlapping_the_activity() -> None:
    """A backfill record of the key whose ccstream-gap misses the activity does not count."""
    raw = gc_raw(conv_gap=(23.0, 26.0))   # the conversation ended at 22
    verdict = judge_gc(gc_ledger(), GC_SPEC, gc_evidence(raw))
    assert [loss.item for loss in verdict.lost] == [f"conversation {CONV}"]


def test_gc_rule2_judges_users_only_with_user_status_topics() -> None:
    """Users are judged on streams with presence/routingStatus topics only."""
    raw = gc_raw(skip="backfill.user")
    assert judge_gc(gc_ledger(), GC_SPEC, gc_evidence(raw)).lost_by_rule()[2] == 1
    queues_only = GcSpec(stream=GC, client_id="acme", topics=TOPICS[:1], settle_s=10.0)
    assert judge_gc(gc_ledger(), queues_only, gc_evidence(raw)).ok


def test_gc_rule2_defers_late_gaps_still_open() -> None:
    """An interval whose gap ended too recently is not judged if its gap is in open_gaps."""
    raw = gc_raw(skip="backfill")
    late = gc_evidence(raw, lines=[], open_gaps=[[t(18.5), t(26.0)]], shutdown=60.0)
    verdict = judge_gc(gc_ledger(), GC_SPEC, late)
    assert verdict.ok and verdict.counts["uncovered_deferred"] == 1
    dropped = gc_evidence(raw, shutdown=60.0)
    assert judge_gc(gc_ledger(), GC_SPEC, dropped).lost_by_rule()[2] == 2


def test_gc_rule3_catches_an_unreported_uncovered_interval() -> None:
    """An uncovered interval not inside the reported gaps: lost (3), and its activity judged."""
    verdict = judge_gc(gc_ledger(), GC_SPEC, gc_evidence(lines=[gap_line(GC, 21.0, 26.0)]))
    assert verdict.lost_by_rule()[3] == 1
    assert "uncovered" in verdict.lost[0].item or "uncovered" in verdict.lost[-1].item
    none = judge_gc(gc_ledger(), GC_SPEC, gc_evidence(gc_raw(), lines=[]))
    assert none.lost_by_rule()[3] == 1


def test_gc_duplicates_fail_the_verdict() -> None:
    """Two clean records with one dedup key are a duplicate."""
    raw = gc_raw()
    evidence = Evidence(raw=raw, clean=[*raw, raw[1]],
                        gap_lines=[gap_line(GC, 18.5, 26.0)], open_gaps=[],
                        shutdown_at=T0 + 90)
    verdict = judge_gc(gc_ledger(), GC_SPEC, evidence)
    assert not verdict.ok and len(verdict.duplicated) == 1
