"""Pure parts of the simulator: state machine, tokens, events, fault scripts and presets."""

from __future__ import annotations

import random

import pytest

from simulator.board import FaultBoard
from simulator.connection import TRANSITIONS, ConnState, is_auth_close
from simulator.events import (
    EventFactory,
    EventLog,
    decode_cursor,
    encode_cursor,
    parse_rfc3339_ms,
    rfc3339_ms,
)
from simulator.faults import (
    PRESETS,
    Fault,
    FaultKind,
    FaultScriptError,
    parse_fault,
    parse_inline,
    parse_script,
    preset_schedule,
)
from simulator.tokens import TokenBook, TokenState, peek_client


class _Conn:
    """Just enough of a Connection for ``move`` (which only reads and writes ``state``)."""

    def __init__(self, state: ConnState) -> None:
        self.state = state


def test_connection_state_table_is_walked_and_enforced() -> None:
    """Every allowed transition succeeds and every other one raises, for every state."""
    from simulator.connection import Connection

    for source in ConnState:
        for target in ConnState:
            conn = _Conn(source)
            if target is source or target in TRANSITIONS[source]:
                Connection.move(conn, target)  # type: ignore[arg-type]
                assert conn.state is target
            else:
                with pytest.raises(RuntimeError):
                    Connection.move(conn, target)  # type: ignore[arg-type]
    assert not TRANSITIONS[ConnState.CLOSED]


def test_auth_close_is_1008_or_1000_with_an_error_payload() -> None:
    """Only 1008 and 1000 carrying {"error": token_expired|unauthorized} are auth closes."""
    assert is_auth_close(1008, b"")
    assert is_auth_close(1000, b'{"error": "token_expired"}')
    assert is_auth_close(1000, b'{"error": "unauthorized"}')
    assert not is_auth_close(1000, b"Graceful shutdown")
    assert not is_auth_close(1013, b'{"retry_after": 3}')


def test_tokens_are_jwts_that_expire_and_can_be_revoked() -> None:
    """An issued token is valid until exp, expired after, revoked on demand, garbage invalid."""
    book = TokenBook(random.Random(1), refresh_lifetime_s=100)
    grant = book.issue("acme", now=1000.0, lifetime_s=60, with_refresh=True)
    assert peek_client(grant.access_token) == "acme"
    assert book.check(grant.access_token, 1059.9).state is TokenState.VALID
    assert book.check(grant.access_token, 1060.0).state is TokenState.EXPIRED
    assert book.check("a.b.c", 1000.0).state is TokenState.INVALID
    assert book.check(grant.access_token[:-2] + "xx", 1000.0).state is TokenState.INVALID
    book.revoke_client("acme")
    assert book.check(grant.access_token, 1001.0).state is TokenState.REVOKED
    later = book.issue("acme", now=1001.0, lifetime_s=60, with_refresh=False)
    assert book.check(later.access_token, 1002.0).state is TokenState.VALID


def test_refresh_tokens_are_single_use_and_bound_to_their_client() -> None:
    """A refresh token redeems once, only for its own client, only before it expires."""
    book = TokenBook(random.Random(2), refresh_lifetime_s=100)
    rt = book.issue("acme", 0.0, 60, True).refresh_token
    assert rt is not None
    assert book.redeem(rt, "acme", 10.0)
    assert not book.redeem(rt, "acme", 10.0)
    other = book.issue("acme", 0.0, 60, True).refresh_token
    assert other is not None
    assert not book.redeem(other, "intruder", 10.0)
    old = book.issue("acme", 0.0, 60, True).refresh_token
    assert old is not None
    assert not book.redeem(old, "acme", 100.0)


def test_timestamps_are_rfc3339_utc_with_milliseconds() -> None:
    """The wire form round-trips through the parser, and bad text parses to None."""
    assert rfc3339_ms(1705314600000) == "2024-01-15T10:30:00.000Z"
    assert parse_rfc3339_ms("2024-01-15T10:30:00.000Z") == 1705314600000
    assert parse_rfc3339_ms("yesterday") is None
    assert parse_rfc3339_ms("2024-01-15T10:30:00") is None


def test_factory_makes_unique_keys_in_per_correlation_order() -> None:
    """Even at many events per millisecond, dedup keys are unique and per-id times increase."""
    factory = EventFactory("genesys", ("a", "b"), 5, random.Random(3), "g1")
    events = [factory.make(seq, now_ms=1_000) for seq in range(200)]
    assert len({e.key for e in events}) == len(events)
    last: dict[str, int] = {}
    for event in events:
        assert event.ts_ms > last.get(event.corr, -1)
        last[event.corr] = event.ts_ms
    assert [e.ts_ms for e in events] == sorted(e.ts_ms for e in events)


def test_factory_is_reproducible_from_its_seed() -> None:
    """The same seed gives the same frames."""
    def frames(seed: int) -> list[bytes]:
        factory = EventFactory("nice", ("x",), 10, random.Random(seed), "n1")
        return [factory.make(i, 5_000 + i).frame for i in range(20)]

    assert frames(7) == frames(7)
    assert frames(7) != frames(8)


def test_log_since_is_inclusive_and_retention_records_the_gap() -> None:
    """seq_since finds the first event at or after T; evictions remember the newest dropped."""
    factory = EventFactory("genesys", ("a",), 50, random.Random(4), "g2")
    log = EventLog(max_events=10)
    for seq in range(30):
        log.append(factory.make(seq, now_ms=10_000 + seq * 10))
    assert len(log) == 10 and log.first_seq == 20
    target = log.get(25)
    assert target is not None
    assert log.seq_since(target.ts_ms) == 25
    assert log.evicted_ms == 10_000 + 19 * 10
    assert [e.seq for e in log.batch(0, 3)] == [20, 21, 22]


def test_cursor_names_its_stream_and_position() -> None:
    """A cursor decodes to its position on its own stream, and to None anywhere else."""
    cursor = encode_cursor("n1", 42)
    assert decode_cursor(cursor, "n1") == 42
    assert decode_cursor(cursor, "n2") is None
    assert decode_cursor("%%%", "n1") is None


def test_fault_scripts_parse_from_toml_json_and_inline() -> None:
    """The three script forms give the same fault."""
    toml = '[[fault]]\nkind = "close"\ncode = 1013\nretry_after = 3\nafter_events = 50\n'
    json_text = '[{"kind": "close", "code": 1013, "retry_after": 3, "after_events": 50}]'
    inline = parse_inline("kind=close,code=1013,retry_after=3,after_events=50")
    assert parse_script(toml) == parse_script(json_text) == [inline]
    assert inline.close_reason() == b'{"retry_after": 3.0}'


@pytest.mark.parametrize(("entry", "where"), [
    ({"kind": "explode"}, "kind"),
    ({"code": 1000}, "kind"),
    ({"kind": "close", "code": 4000}, "code"),
    ({"kind": "close", "code": 1000, "status": 401}, "status"),
    ({"kind": "stall"}, "duration_s"),
    ({"kind": "malformed", "variant": "haiku"}, "variant"),
    ({"kind": "handshake_error", "status": 500}, "status"),
    ({"kind": "reset", "after_events": "many"}, "after_events"),
    ({"kind": "reset", "colour": "red"}, "colour"),
])
def test_bad_fault_entries_name_the_offending_setting(entry: dict[str, object],
                                                      where: str) -> None:
    """A bad fault is a FaultScriptError naming the setting at fault."""
    with pytest.raises(FaultScriptError) as info:
        parse_fault(entry)
    assert info.value.where == where


def test_bad_scripts_name_the_entry() -> None:
    """Script errors say which entry of which script is wrong."""
    with pytest.raises(FaultScriptError, match=r"x.toml: fault\[1\].code"):
        parse_script('[[fault]]\nkind="reset"\n[[fault]]\nkind="close"\ncode=1\n', "x.toml")
    with pytest.raises(FaultScriptError, match="not valid JSON"):
        parse_script("[{", "x.json")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_seeded_and_survivable(name: str) -> None:
    """A preset schedule is reproducible, ordered in time, and never loses events or locks out."""
    def draw(seed: int) -> list[Fault]:
        schedule = preset_schedule(name, random.Random(f"{name}:{seed}"), ["a", "b"],
                                   interval_s=2.0)
        return [next(schedule) for _ in range(60)]

    faults = draw(5)
    assert faults == draw(5)
    times = [f.at_s or 0.0 for f in faults]
    assert times == sorted(times)
    for fault in faults:
        assert fault.fault_kind is not FaultKind.PURGE
        assert fault.status != 403
        assert not (fault.fault_kind is FaultKind.TOKEN_ERROR and fault.status == 401)


def test_board_targets_the_nth_connection_after_n_events() -> None:
    """A connection fault fires only on its client's Nth connection, once it sent N events."""
    board = FaultBoard()
    board.arm(Fault(kind="close", client="a", connection=2, after_events=5, code=1011))
    assert board.take_connection("a", "genesys", 1, 50) is None
    assert board.take_connection("b", "genesys", 2, 50) is None
    assert board.take_connection("a", "nice", 2, 4) is None
    fired = board.take_connection("a", "nice", 2, 5)
    assert fired is not None and fired.code == 1011
    assert not board.armed


def test_board_answers_count_and_invalid_grant_waits_for_a_refresh() -> None:
    """Answer faults serve COUNT requests; a 400 is kept for the next refresh grant."""
    board = FaultBoard()
    board.arm(Fault(kind="token_error", status=400))
    board.arm(Fault(kind="handshake_error", status=503, count=2))
    assert board.take_answer(FaultKind.TOKEN_ERROR, "a", None, refresh=False) is None
    assert board.take_answer(FaultKind.TOKEN_ERROR, "a", None, refresh=True) is not None
    answers = [board.take_answer(FaultKind.HANDSHAKE_ERROR, "a", "nice") for _ in range(3)]
    assert [a.status if a else None for a in answers] == [503, 503, None]


def test_board_remembers_retry_after_promises() -> None:
    """An attempt before the promised time is early; at or after it is not."""
    board = FaultBoard()
    assert board.promise("a", "stream", 1.2, now=100.0) == 2
    assert board.early("a", "stream", now=101.9)
    assert not board.early("a", "stream", now=102.0)
    assert not board.early("a", "token", now=100.5)
    board.promise_exact("a", "stream", 0.5, now=200.0)
    assert board.early("a", "stream", now=200.4) and not board.early("a", "stream", now=200.5)


def test_board_maintenance_window_opens_and_closes() -> None:
    """During the window the remaining time is announced; afterwards nothing is."""
    board = FaultBoard()
    board.open_window(Fault(kind="maintenance", duration_s=10, platform="nice"), now=0.0)
    assert board.maintenance("a", "nice", now=4.0) == 6.0
    assert board.maintenance("a", "genesys", now=4.0) is None
    assert board.maintenance("a", "nice", now=10.0) is None
