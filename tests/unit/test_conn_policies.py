"""Pure tests of the connector's policies: backoff, salting, rate limit, breaker, retry window,
close codes, keep-alive clock, token math, resume-point tracking, stop requests and record sizes
(no I/O, milliseconds)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import random

import orjson
import pytest
from aiokafka.errors import RecordTooLargeError

from ccstream.config import KafkaSettings, TopicNames
from ccstream.records import rfc3339
from ccstream.topics import max_record_bytes
from connectors.kafka.sink import KafkaSink
from connectors.platforms import adapter_for
from connectors.policy.backoff import Backoff
from connectors.policy.breaker import TRANSITIONS, Breaker, BreakerState, BreakerTransitionError
from connectors.policy.close_codes import Action, classify_close, classify_handshake
from connectors.policy.keepalive import Beat, KeepAlive
from connectors.policy.progress import CursorProgress, SinceProgress
from connectors.policy.ratelimit import TokenBucket
from connectors.policy.retry import ReconnectPolicy, RetryWindow
from connectors.policy.token_expiry import expires_at, jwt_exp, refresh_at
from connectors.salt import salted_random
from connectors.sources.stopping import Stopping


def fixed(value: float):
    return lambda: value


# -- backoff ---------------------------------------------------------------------------------------
def test_default_jitter_follows_the_contract_formula() -> None:
    """Default delay is min(base * 2**attempt, max) * (0.5 + random())."""
    for r in (0.0, 0.25, 0.999):
        backoff = Backoff(1.0, 30.0, "default", fixed(r))
        assert [backoff.delay(a) for a in range(7)] == pytest.approx(
            [min(2.0**a, 30.0) * (0.5 + r) for a in range(7)])


def test_delays_stay_within_half_and_one_and_a_half_of_the_cap() -> None:
    """With a real random source every default delay lies in [0.5, 1.5) x the capped value."""
    backoff = Backoff(0.5, 8.0, "default", random.Random(1).random)
    for attempt in range(40):
        capped = min(0.5 * 2**attempt, 8.0)
        assert 0.5 * capped <= backoff.delay(attempt) < 1.5 * capped


def test_full_and_none_jitter() -> None:
    """Full jitter is uniform below the cap; ``none`` is the capped exponential itself."""
    assert Backoff(1.0, 30.0, "full", fixed(0.5)).delay(3) == pytest.approx(4.0)
    assert Backoff(1.0, 30.0, "none", fixed(0.9)).delay(10) == 30.0


def test_decorrelated_jitter_grows_from_the_previous_delay_and_resets() -> None:
    """Decorrelated jitter draws in [base, 3 x previous], capped, and reset() starts over."""
    backoff = Backoff(1.0, 20.0, "decorrelated", fixed(1.0))
    assert [backoff.delay(0) for _ in range(4)] == [3.0, 9.0, 20.0, 20.0]
    backoff.reset()
    assert backoff.delay(0) == 3.0


def test_floor_and_deployment_offset() -> None:
    """The deployment offset is added to every delay and a Retry-After floor is never undercut."""
    backoff = Backoff(1.0, 30.0, "none", fixed(0.0), offset_s=0.25)
    assert backoff.delay(0) == 1.25
    assert backoff.delay(0, floor_s=7.0) == 7.0
    assert backoff.delay(5, floor_s=7.0) == 30.25


def test_salted_sources_differ_per_instance_and_per_stream() -> None:
    """Two instances (or two streams) draw different jitter; the same salt repeats itself."""
    a = [salted_random(b"host-a|1|x", "s").random() for _ in range(1)]
    b = [salted_random(b"host-b|1|x", "s").random() for _ in range(1)]
    c = [salted_random(b"host-a|1|x", "t").random() for _ in range(1)]
    assert a != b and a != c
    assert a == [salted_random(b"host-a|1|x", "s").random()]


def test_salted_delays_spread_a_fleet() -> None:
    """A fleet of 200 salted instances does not reconnect in lockstep at the same attempt."""
    delays = {round(Backoff(1.0, 30.0, "default",
                            salted_random(f"pid{i}".encode()).random).delay(3), 3)
              for i in range(200)}
    assert len(delays) > 190


# -- token bucket ----------------------------------------------------------------------------------
def test_token_bucket_allows_a_burst_then_spaces_reconnects() -> None:
    """Burst tokens are free; later reservations wait 1/rate each, in FIFO order."""
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [bucket.reserve(0.0) for _ in range(3)] == pytest.approx([0.5, 1.0, 1.5])
    assert bucket.reserve(10.0) == 0.0  # refilled (capped at the burst)
    assert bucket.available(10.0) == pytest.approx(2.0)


# -- retry window ----------------------------------------------------------------------------------
def test_retry_window_forgets_old_attempts() -> None:
    """Attempts older than the window no longer count; reset() clears the window."""
    window = RetryWindow(10.0)
    assert [window.record(t) for t in (0.0, 1.0, 2.0)] == [1, 2, 3]
    assert window.count(10.5) == 2
    assert window.record(12.5) == 1
    window.reset()
    assert window.count(12.5) == 0


# -- breaker ---------------------------------------------------------------------------------------
def test_breaker_transition_table_is_enforced() -> None:
    """Every transition the table lists is allowed and every other one raises."""
    for current, target in itertools.product(BreakerState, BreakerState):
        breaker = Breaker(1.0)
        breaker.state = current
        if target in TRANSITIONS[current]:
            breaker._go(target)
            assert breaker.state is target
        else:
            with pytest.raises(BreakerTransitionError):
                breaker._go(target)


def test_breaker_cycle_open_half_open_closed() -> None:
    """Open until the cool-down passes, then half-open; an event closes it."""
    breaker = Breaker(5.0)
    breaker.trip(100.0)
    assert not breaker.half_open(104.9)
    assert breaker.half_open(105.0)
    assert breaker.success() and breaker.state is BreakerState.CLOSED


def policy(max_attempts: int = 3, max_auth: int = 2, cooldown: float = 60.0) -> ReconnectPolicy:
    return ReconnectPolicy(Backoff(1.0, 30.0, "none", fixed(0.0)), RetryWindow(600.0),
                           Breaker(cooldown), max_attempts, max_auth)


def test_policy_opens_the_breaker_after_max_attempts() -> None:
    """The max_attempts-th failure in the window opens the breaker and waits the cool-down."""
    p = policy()
    assert [p.failure(t).delay_s for t in (0.0, 1.0)] == [1.0, 2.0]
    plan = p.failure(2.0)
    assert plan.opened and plan.state is BreakerState.OPEN and plan.delay_s == 60.0
    assert p.ready(30.0) == pytest.approx(32.0)
    assert p.ready(62.0) == 0.0 and p.breaker.state is BreakerState.HALF_OPEN
    again = p.failure(63.0)  # the probe failed
    assert again.opened and again.state is BreakerState.OPEN


def test_policy_counter_resets_only_on_an_event() -> None:
    """Handshakes do not reset the attempt counter; an event does."""
    p = policy(max_attempts=5)
    for t in range(3):
        p.failure(float(t))
    assert p.failure(3.0).delay_s == 8.0  # still counting: no event in between
    assert not p.event()
    assert p.failure(4.0).delay_s == 1.0


def test_consecutive_auth_failures_open_the_breaker() -> None:
    """max_auth_failures auth failures in a row open the breaker instead of looping on 401."""
    p = policy(max_attempts=100, max_auth=2)
    assert not p.failure(0.0, auth=True).opened
    assert p.failure(1.0, auth=True).opened


def test_floor_is_kept_even_when_the_breaker_opens() -> None:
    """A Retry-After longer than the cool-down is still a floor."""
    p = policy(max_attempts=1, cooldown=1.0)
    assert p.failure(0.0, floor_s=9.0).delay_s == 9.0


# -- close codes and handshakes --------------------------------------------------------------------
@pytest.mark.parametrize(("code", "reason", "action", "floor"), [
    (1000, '{"error":"token_expired"}', Action.REFRESH, 0.0),
    (1000, '{"error":"unauthorized"}', Action.REFRESH, 0.0),
    (1000, "bye", Action.RECONNECT, 0.0),
    (1001, "", Action.RECONNECT, 0.0),
    (1008, "", Action.REFRESH, 0.0),
    (1011, "", Action.RECONNECT, 0.0),
    (1012, "", Action.RECONNECT, 0.0),
    (1014, "", Action.RECONNECT, 0.0),
    (1013, '{"retry_after": 7}', Action.RECONNECT, 7.0),
    (1013, "not json", Action.RECONNECT, 0.0),
    (None, "", Action.RECONNECT, 0.0),
])
def test_close_table(code: int | None, reason: str, action: Action, floor: float) -> None:
    """Each row of the contract's closing table maps to its action and floor."""
    d = classify_close(code, reason)
    assert (d.action, d.floor_s) == (action, floor)


@pytest.mark.parametrize(("status", "action", "floor"), [
    (401, Action.REFRESH, 0.0), (403, Action.FATAL, 0.0),
    (429, Action.RECONNECT, 3.0), (503, Action.RECONNECT, 3.0), (500, Action.RECONNECT, 3.0),
])
def test_handshake_table(status: int, action: Action, floor: float) -> None:
    """Handshake answers: 401 refresh, 403 fatal, 429/503 retry no earlier than Retry-After."""
    d = classify_handshake(status, {"Retry-After": "3"})
    assert (d.action, d.floor_s) == (action, floor)


# -- keep-alive ------------------------------------------------------------------------------------
def test_keepalive_pings_on_schedule_whatever_arrives() -> None:
    """Pings go out every interval even while frames keep arriving (the platform's rule)."""
    ka = KeepAlive(12.0, 2.0, now=0.0)
    assert ka.next(5.0).beat is Beat.WAIT and ka.next(5.0).at == 12.0
    ka.inbound(11.0)
    assert ka.next(12.0).beat is Beat.PING


def test_keepalive_detects_a_missing_pong_within_interval_plus_timeout() -> None:
    """No frame for pong_timeout after a ping means dead; any inbound frame means alive."""
    ka = KeepAlive(12.0, 2.0, now=0.0)
    ka.ping_sent(12.0)
    assert ka.next(13.9).beat is Beat.WAIT and ka.next(13.9).at == 14.0
    assert ka.next(14.0).beat is Beat.DEAD
    ka.inbound(14.0)  # e.g. an event arrived instead of the pong
    assert ka.next(14.0).beat is Beat.WAIT


# -- token math ------------------------------------------------------------------------------------
def jwt(claims: dict[str, object]) -> str:
    body = base64.urlsafe_b64encode(orjson.dumps(claims)).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{body}.sig"


def test_jwt_exp_is_read_without_verification() -> None:
    """The exp claim is read from the payload; anything unreadable gives None."""
    assert jwt_exp(jwt({"exp": 1700000000, "iat": 1})) == 1700000000.0
    assert jwt_exp("opaque") is None
    assert jwt_exp("a.!!!.c") is None
    assert jwt_exp(jwt({"iat": 1})) is None


def test_expiry_is_the_earlier_of_exp_and_receipt_plus_expires_in() -> None:
    """Clock skew either way: the earlier of the two times wins."""
    assert expires_at(1000.0, 3600.0, 2000.0) == 2000.0   # server clock behind
    assert expires_at(1000.0, 3600.0, 9000.0) == 4600.0   # server clock ahead
    assert expires_at(1000.0, None, None) == float("inf")


def test_refresh_is_due_a_buffer_before_expiry_capped_at_half_the_lifetime() -> None:
    """300 s before expiry normally; half-way through a token shorter than twice the buffer."""
    assert refresh_at(0.0, 7200.0, 300.0) == 6900.0
    assert refresh_at(0.0, 4.0, 300.0) == 2.0


# -- resume points ---------------------------------------------------------------------------------
def test_nice_cursor_advances_over_the_acknowledged_prefix_only() -> None:
    """An out-of-order acknowledgement does not move the cursor past an unacknowledged send."""
    p = CursorProgress("c0")
    seqs = [p.track(f"c{i}") for i in range(1, 4)]
    p.ack(seqs[1])
    assert p.resume_point() == "c0"
    p.ack(seqs[0])
    assert p.resume_point() == "c2"
    p.ack(seqs[2])
    dlq, last = p.track(None), p.track("c4")
    p.ack(last)
    assert p.resume_point() == "c3"  # the DLQ record before c4 is not acknowledged yet
    p.ack(dlq)
    assert p.resume_point() == "c4"


def test_nice_rewind_forgets_failed_sends_and_keeps_the_prefix() -> None:
    """After a failed send, rewind() resumes before it and later stray acks change nothing."""
    p = CursorProgress(None)
    a, b = p.track("c1"), p.track("c2")
    p.ack(a)
    p.fail(b)
    assert p.failed
    assert p.rewind() == "c1"
    p.ack(b)
    assert p.resume_point() == "c1" and p.unacknowledged == 0


def test_genesys_since_is_a_low_watermark_minus_lateness() -> None:
    """since = min(newest acknowledged - lateness, oldest unacknowledged), never moving back."""
    p = SinceProgress(None, lateness_s=10.0)
    a, b, c = p.track(100.0), p.track(130.0), p.track(95.0)  # 95: other correlation id, late
    p.ack(a)
    p.ack(b)
    assert p.resume_point() == rfc3339(95.0)  # c is in flight: it must be replayed
    p.ack(c)
    assert p.resume_point() == rfc3339(120.0)
    assert p.rewind() == rfc3339(120.0)
    d = p.track(101.0)  # later than the lateness allowance: counted, floor kept
    assert p.late == 1
    p.ack(d)
    assert p.resume_point() == rfc3339(120.0)


def test_genesys_since_counts_lateness_from_what_was_received() -> None:
    """Before anything is acknowledged the point is already newest received minus lateness,
    never the first pending timestamp; acknowledgements then only move it forward (found by
    the cluster tests: a first commit at the pending event's time, then 30 s back)."""
    p = SinceProgress(None, lateness_s=30.0)
    a = p.track(1000.0)
    assert p.resume_point() == rfc3339(970.0)  # an event up to 30 s older may still come
    points = [p.resume_epoch()]
    b = p.track(1010.0)
    points.append(p.resume_epoch())
    p.ack(a)
    points.append(p.resume_epoch())
    p.ack(b)
    points.append(p.resume_epoch())
    assert points == sorted(points) and points[-1] == 980.0


def test_genesys_rewind_covers_a_failed_send_older_than_the_prefix() -> None:
    """A failed send older than newest-minus-lateness pins the floor at its own timestamp."""
    p = SinceProgress(None, lateness_s=10.0)
    a, b = p.track(200.0), p.track(150.0)
    p.ack(a)
    p.fail(b)
    assert p.rewind() == rfc3339(150.0)
    assert p.resume_point() == rfc3339(150.0)


# -- stopping, record sizes ------------------------------------------------------------------------
async def test_a_stop_ends_sleeps_and_races_at_once() -> None:
    """A stop request ends a pending sleep (False) and cancels raced work (None)."""
    stopping = Stopping()
    assert await stopping.sleep(0.0) is True
    assert await stopping.race(asyncio.sleep(0, result="done")) == "done"
    never = asyncio.get_running_loop().create_future()
    sleeper = asyncio.ensure_future(stopping.sleep(3600))
    racer = asyncio.ensure_future(stopping.race(never))
    await asyncio.sleep(0)
    stopping.set()
    assert await sleeper is False and await racer is None
    assert never.cancelled()


async def test_an_event_larger_than_the_raw_topic_takes_is_refused_before_batching() -> None:
    """The sink refuses a record over the raw topic's limit itself (it would fail its whole
    batch at the broker), and sizes the producer's request limit from max_frame_bytes."""
    sink = KafkaSink(KafkaSettings(bootstrap_servers="127.0.0.1:1"), TopicNames(),
                     max_frame_bytes=1_048_576)
    assert sink.max_request_bytes == max_record_bytes(1_048_576) > 1_048_576 + 1024
    sink.raw_limit = 2000
    raw = orjson.dumps({"eventType": "t", "correlationId": "c", "eventBody": {"p": "x" * 3000},
                        "timestamp": "2024-01-15T10:30:00.000Z"})
    frame = adapter_for("genesys").parse(raw, False, 1_048_576)
    with pytest.raises(RecordTooLargeError):
        await sink.send_event("g", "genesys", frame, 0.0)


def test_source_lifecycle_table_is_walked() -> None:
    """Every transition the table allows is accepted, every other one refused; the two end
    states are final and every live state can stop or fail."""
    from connectors.policy.lifecycle import (
        TRANSITIONS,
        SourceStatus,
        TransitionError,
        live,
        transition,
    )

    for current in SourceStatus:
        for new in SourceStatus:
            if new is current or new in TRANSITIONS[current]:
                assert transition(current, new) is new
            else:
                with pytest.raises(TransitionError):
                    transition(current, new)
        if live(current):
            assert {SourceStatus.STOPPED, SourceStatus.FAILED} <= TRANSITIONS[current]
    assert not live(SourceStatus.STOPPED) and not live(SourceStatus.FAILED)
    # a breaker that opened only closes through a half-open attempt
    assert TRANSITIONS[SourceStatus.OPEN] & {SourceStatus.STREAMING, SourceStatus.WAITING} == set()
