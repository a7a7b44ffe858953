"""The CXone simulator's pure parts: row versions and selection, completed paging, tokens, the
rule book, the fault catalogue and board, presets (no I/O, no clock, milliseconds)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from simulator.cxone import faults as cxfaults
from simulator.cxone.board import CxBoard
from simulator.cxone.completed import CompletedStore
from simulator.cxone.faults import CxFault, CxFaultError, CxFaultKind, parse_inline, parse_script
from simulator.cxone.model import ACTIONS, TenantModel
from simulator.cxone.rules import RuleBook
from simulator.cxone.tokens import TokenBook, TokenState
from simulator.cxone.values import (
    AGENTS,
    CONTACTS,
    POLL_ENDPOINTS,
    SKILLS,
    digest,
    iso_ms,
    parse_iso_ms,
)

T0 = 1_800_000_000_000
DAY = 86_400_000


def _model(seed: int = 1, agents: int = 6, lag_ms: int = 0) -> TenantModel:
    return TenantModel("acme", agents, 3, random.Random(seed), now_ms=T0, lag_ms=lag_ms)


def test_iso_ms_round_trips_and_accepts_offsets_and_decoded_plus() -> None:
    """Times are ISO 8601 UTC with ms; parsing floors to ms, reads offsets and a '+' lost to
    form decoding."""
    assert iso_ms(T0 + 123) == "2027-01-15T08:00:00.123Z"
    assert parse_iso_ms(iso_ms(T0 + 123)) == T0 + 123
    assert parse_iso_ms("2027-01-15T09:00:00.123456+01:00") == T0 + 123
    assert parse_iso_ms("2027-01-15T08:00:00.123 00:00") == T0 + 123
    assert parse_iso_ms("2027-01-15T08:00:00") == T0
    assert parse_iso_ms("yesterday") is None and parse_iso_ms("") is None


def test_every_change_is_a_version_strictly_increasing_per_row_even_on_a_frozen_clock() -> None:
    """lastUpdateTime is the server's now, bumped by 1 ms per row when the clock has not moved."""
    model = _model()
    for _ in range(300):
        model.step(T0)
    per_row: dict[tuple[str, str], list[int]] = {}
    for version in model.history:
        per_row.setdefault((version.endpoint, version.key), []).append(version.updated_ms)
    assert all(times == sorted(set(times)) for times in per_row.values())
    for version in model.history:
        if version.endpoint != SKILLS:
            assert version.row["lastUpdateTime"] == iso_ms(version.updated_ms)
        assert version.digest == digest(version.row)


def test_versions_record_when_they_were_current() -> None:
    """Each version is current from its lastUpdateTime until the next version of its row."""
    model = _model()
    for n in range(200):
        model.step(T0 + 1000 * n)
    seen: dict[tuple[str, str], object] = {}
    for version in model.history:
        previous = seen.get((version.endpoint, version.key))
        if previous is not None:
            assert previous.current_to_ms == version.updated_ms  # type: ignore[attr-defined]
        seen[version.endpoint, version.key] = version
    for endpoint in POLL_ENDPOINTS:
        assert all(v.current_to_ms is None for v in model.current[endpoint].values())


def test_updated_since_is_inclusive_and_serves_current_rows_only() -> None:
    """Rows with lastUpdateTime >= u, each once and in its current state; none -> 304."""
    model = _model()
    model.step(T0 + 5000, "away")
    changed = max(model.current[AGENTS].values(), key=lambda v: v.updated_ms)
    answer = model.answer(AGENTS, changed.updated_ms, now_ms=T0 + 6000, retention_ms=DAY)
    assert answer.status == 200 and changed in answer.versions
    assert all(v.updated_ms >= changed.updated_ms for v in answer.versions)
    assert model.answer(AGENTS, changed.updated_ms + 1, now_ms=T0 + 6000,
                        retention_ms=DAY).status == 304
    for n in range(3):  # three changes of one row between polls: one row, the last state
        model.step(T0 + 7000 + n, "away")
    answer = model.answer(AGENTS, T0 + 7000, now_ms=T0 + 8000, retention_ms=DAY)
    keys = [v.key for v in answer.versions]
    assert len(keys) == len(set(keys))
    assert all(model.current[AGENTS][v.key] is v for v in answer.versions)


def test_retention_truncates_to_the_full_snapshot() -> None:
    """u older than retention (or a truncate fault) -> every current row, truncated."""
    model = _model()
    old = model.answer(AGENTS, T0 - DAY - 1, now_ms=T0, retention_ms=DAY)
    assert old.truncated and len(old.versions) == len(model.current[AGENTS])
    forced = model.answer(AGENTS, T0 + 1, now_ms=T0 + 2, retention_ms=DAY, truncate=True)
    assert forced.truncated and len(forced.versions) == len(model.current[AGENTS])
    assert not model.answer(AGENTS, None, now_ms=T0, retention_ms=DAY).truncated


def test_repeat_rows_adds_unchanged_rows_older_than_u() -> None:
    """repeat_rows turns a 304 into a 200 carrying rows the client already had."""
    model = _model()
    answer = model.answer(AGENTS, T0 + 10, now_ms=T0 + 20, retention_ms=DAY, repeat=2)
    assert answer.status == 200 and answer.repeated == 2
    assert all(v.updated_ms < T0 + 10 for v in answer.versions)


def test_contacts_end_silently_into_completed() -> None:
    """An ended contact leaves contacts/active (no row) and is completed with its final time."""
    model = _model()
    model.step(T0 + 1, "start")
    (contact,) = model.current[CONTACTS].values()
    model.step(T0 + 2, "end")
    assert not model.current[CONTACTS]
    assert contact.current_to_ms is not None
    (done,) = model.completed.entries
    assert done.contact_id == contact.key and done.completed_ms == contact.current_to_ms
    assert done.row["lastUpdateTime"] == iso_ms(done.completed_ms)
    assert done.completed_ms > contact.updated_ms


def test_skill_counters_follow_agents_and_contacts() -> None:
    """A skill row changes when one of its counters moves, and only then."""
    model = _model()
    before = {k: v.row for k, v in model.current[SKILLS].items()}
    model.step(T0 + 1, "start")
    after = {k: v.row for k, v in model.current[SKILLS].items()}
    assert before != after
    assert sum(r["contactsActive"] + r["contactsQueued"] for r in after.values()) == 1


def test_every_action_is_reachable_and_the_data_is_seeded() -> None:
    """A long run uses every action; the same seed gives the same history."""
    one, two = _model(seed=5), _model(seed=5)
    used = {one.step(T0 + n) for n in range(2000)}
    for n in range(2000):
        two.step(T0 + n)
    assert set(ACTIONS) <= used
    assert [v.digest for v in one.history] == [v.digest for v in two.history]
    with pytest.raises(ValueError, match="unknown action"):
        one.step(T0, "dance")


def test_collapse_makes_short_lived_versions_and_serves_the_last() -> None:
    """collapse: many versions at once; only the last of each row is current."""
    model = _model()
    made = model.collapse(T0 + 10, rows=2, transitions=3)
    assert made >= 6
    recent = [v for v in model.history[-made:] if v.endpoint == AGENTS]
    assert len({v.key for v in recent}) == 2
    assert sum(v.current_to_ms is None for v in recent) == 2


def test_completed_listing_is_inclusive_in_completion_order_after_the_lag() -> None:
    """[start, end] inclusive, completion order, each row once its lag has passed."""
    store = CompletedStore()
    store.add("b", {"contactId": "b"}, T0 + 20, T0 + 20)
    store.add("a", {"contactId": "a"}, T0 + 10, T0 + 500)
    store.add("c", {"contactId": "c"}, T0 + 30, T0 + 30)
    assert [c.contact_id for c in store.listing(T0 + 10, T0 + 30, T0 + 100)] == ["b", "c"]
    assert [c.contact_id for c in store.listing(T0 + 10, T0 + 30, T0 + 500)] == ["a", "b", "c"]
    assert [c.contact_id for c in store.listing(T0 + 11, T0 + 29, T0 + 500)] == ["b"]


def test_a_late_row_shifts_pages_and_nothing_is_removed() -> None:
    """A row becoming visible between pages shifts the next page: a repeat, no miss."""
    store = CompletedStore()
    for n in range(10):
        store.add(str(n), {"contactId": n}, T0 + n, T0 + (1000 if n == 2 else n))
    first = store.page(T0, T0 + 9, T0 + 100, 0, 5)
    second = store.page(T0, T0 + 9, T0 + 1000, 5, 5)
    read = [c.contact_id for c in (*first.rows, *second.rows)]
    assert set(read) - {"2"} == {str(n) for n in range(10)} - {"2"}
    assert read.count("5") == 2  # it was the last of page 1, and is the first of page 2


def test_relist_repeats_rows_of_the_page_so_a_reader_to_a_short_page_misses_none() -> None:
    """completed_shift: rows of the page just served are listed again; the next page repeats."""
    store = CompletedStore()
    for n in range(250):
        store.add(str(n), {"contactId": n}, T0 + n, T0 + n)
    seen: list[str] = []
    skip = 0
    while True:
        page = store.page(T0, T0 + 1000, T0 + 1000, skip, 100)
        seen += [c.contact_id for c in page.rows]
        if len(page.rows) < 100:
            break
        if skip == 0:
            assert store.relist(page, 3) == 3
        skip += 100
    assert set(seen) == {str(n) for n in range(250)}
    assert len(seen) == 253


def test_token_expiry_is_the_earlier_of_exp_and_expires_in() -> None:
    """A token is valid until min(exp - iat, expires_in) on the steady clock; revoked apart."""
    book = TokenBook(b"k" * 32, "http://sim")
    long_exp = book.issue("AK1", tenant="acme", client_id="app", jti="1", steady_s=100.0,
                          server_s=5000.0, expires_in_s=60.0, exp_in_s=3600.0)
    short_exp = book.issue("AK1", tenant="acme", client_id="app", jti="2", steady_s=100.0,
                           server_s=5000.0, expires_in_s=3600.0, exp_in_s=30.0)
    assert book.check(long_exp.access_token, 159.9).state is TokenState.VALID
    assert book.check(long_exp.access_token, 160.0).state is TokenState.EXPIRED
    assert book.check(short_exp.access_token, 130.0).state is TokenState.EXPIRED
    assert book.check("garbage", 0.0).state is TokenState.INVALID
    assert book.expire_now("AK1") == 2
    assert book.check(long_exp.access_token, 101.0).state is TokenState.REVOKED
    assert long_exp.body()["expires_in"] == 60 and long_exp.body()["token_type"] == "Bearer"


def test_rule_book_retry_after_with_tolerance() -> None:
    """A request earlier than a 429's send time + Retry-After (minus 50 ms) is counted; one
    within 50 ms after the 429 was sent may have crossed it and is not."""
    rules = RuleBook()
    rules.throttled("AK1", 100.0, 2.0)
    assert not rules.request("AK1", 101.96)
    assert rules.request("AK1", 101.5)
    assert not rules.request("AK2", 100.5)
    assert not rules.request("AK1", 100.04)  # left the client before the 429 reached it
    assert rules.counts("AK1")["early_request"] == 1
    assert rules.not_before("AK1") == 102.0


def test_rule_book_concurrent_polls_allow_for_late_close_detection() -> None:
    """A second poll counts only if the first was still in flight 50 ms after it began."""
    rules = RuleBook()
    first = rules.poll_started("AK1", AGENTS, 0.0)
    second = rules.poll_started("AK1", AGENTS, 1.0)
    rules.poll_ended(first, 1.01)  # closed just before: detection lag, not a defect
    rules.poll_ended(second, 1.02)
    assert rules.counts("AK1")["concurrent_poll"] == 0
    third = rules.poll_started("AK1", AGENTS, 2.0)
    other = rules.poll_started("AK1", CONTACTS, 2.0)
    fourth = rules.poll_started("AK1", AGENTS, 2.1)
    rules.poll_ended(fourth, 2.11)
    assert rules.counts("AK1", now=3.0)["concurrent_poll"] == 1   # judged while still open
    rules.poll_ended(third, 4.0)
    rules.poll_ended(other, 4.0)
    assert rules.counts("AK1") == {"early_request": 0, "expired_token": 0, "concurrent_poll": 1}


def test_fault_catalogue_validates_and_parses() -> None:
    """Every fault kind is in the catalogue; wrong settings are refused naming the field."""
    assert set(cxfaults.CATALOGUE) == set(CxFaultKind)
    assert parse_inline("kind=rest_error,status=429,retry_after=2").retry_after == 2.0
    assert parse_script('[{"kind": "stall", "duration_s": 1}]')[0].duration_s == 1.0
    assert parse_script('[[fault]]\nkind = "truncate"\nendpoint = "agents/states"\n')[0].endpoint
    cases: list[tuple[dict[str, object], str]] = [
        ({"kind": "rest_error"}, "status"), ({"kind": "melt"}, "kind"),
        ({"kind": "stall", "status": 500}, "status"), ({"kind": "token_error"}, "status"),
        ({"kind": "truncate", "endpoint": "x"}, "endpoint"), ({"kind": "clock_skew"}, "skew_s")]
    for bad, where in cases:
        with pytest.raises(CxFaultError) as info:
            cxfaults.parse_fault(bad)
        assert info.value.where == where
    with pytest.raises(CxFaultError, match=r"fault\[0\]\.count"):
        parse_script('[{"kind": "truncate", "count": 0}]', "f.json")


def test_board_takes_matching_faults_count_times() -> None:
    """A fault answers ``count`` matching requests of its key and endpoint, then is gone."""
    board = CxBoard()
    board.arm(CxFault(CxFaultKind.REST_ERROR, access_key="AK1", status=503, count=2,
                      endpoint=AGENTS))
    assert board.take(CxFaultKind.REST_ERROR, "AK2", AGENTS) is None
    assert board.take(CxFaultKind.REST_ERROR, "AK1", CONTACTS) is None
    assert board.take(CxFaultKind.REST_ERROR, "AK1", AGENTS) is not None
    assert board.take(CxFaultKind.REST_ERROR, "AK1", AGENTS) is not None
    assert board.take(CxFaultKind.REST_ERROR, "AK1", AGENTS) is None
    board.arm(CxFault(CxFaultKind.DISCOVERY_ERROR, access_key="AK1", step="openid"))
    assert board.take(CxFaultKind.DISCOVERY_ERROR, "AK1", step="configuration") is None
    assert board.take(CxFaultKind.DISCOVERY_ERROR, None, step="openid") is not None
    with pytest.raises(ValueError, match="acts when injected"):
        board.arm(CxFault(CxFaultKind.EXPIRE_TOKEN))


def test_presets_are_seeded_and_never_fatal() -> None:
    """Same seed, same schedule; presets hold no fatal token answer; each group is used."""
    def take(name: str, seed: int) -> list[CxFault]:
        schedule = cxfaults.preset_schedule(name, random.Random(seed), ["AK1", "AK2"], 5.0)
        return [next(schedule) for _ in range(300)]
    assert take("chaos", 3) == take("chaos", 3) != take("chaos", 4)
    chaos = take("chaos", 3)
    assert {f.fault_kind for f in chaos} == set(CxFaultKind)
    assert all(f.status not in (400, 401) for f in chaos if f.kind is CxFaultKind.TOKEN_ERROR)
    times = [f.at_s or 0.0 for f in chaos]
    assert times == sorted(times)
    for name in ("auth", "network", "data"):
        assert take(name, 1)
    with pytest.raises(CxFaultError):
        next(cxfaults.preset_schedule("nope", random.Random(1), [], 1.0))
    assert "completed_shift" in cxfaults.describe()


def test_pure_modules_import_no_clock_randomness_or_io() -> None:
    """The decision modules import neither asyncio, time, random, sockets nor aiohttp."""
    import ast

    forbidden = ("asyncio", "time", "random", "socket", "aiohttp", "websockets", "aiokafka",
                 "faust", "threading", "ssl")
    root = Path(__file__).resolve().parents[2] / "simulator" / "cxone"
    for name in ("values", "settings", "model", "completed", "tokens", "rules", "stats",
                 "faults", "board", "ledger"):
        tree = ast.parse((root / f"{name}.py").read_text())
        found = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        found |= {n.module for n in ast.walk(tree)
                  if isinstance(n, ast.ImportFrom) and n.module}
        assert not {f for f in found if f.split(".")[0] in forbidden}, name
