"""Regional failover decisions (connectors/policy/failover.py), pure: values in, decisions out."""

from __future__ import annotations

import pytest

from ccstream.config import ConfigError, parse
from connectors.policy.failover import (
    TRANSITIONS,
    Failover,
    FailoverState,
    FailoverTransitionError,
    Switch,
)


def _failover(endpoints: int = 2, after: int = 3, interval: float = 100.0,
              r: float = 0.5) -> Failover:
    return Failover(endpoints, after, interval, lambda: r)


def _on_secondary(f: Failover, now: float = 0.0) -> None:
    for _ in range(f.after_attempts):
        f.failed()
    assert f.current == 1
    f.streaming(now)


def test_the_transition_table_is_walked() -> None:
    """Every state has an entry; the policy refuses a move the table does not allow."""
    assert set(TRANSITIONS) == set(FailoverState)
    f = _failover()
    for current in FailoverState:
        for new in FailoverState:
            f.state = current
            if new in TRANSITIONS[current]:
                f._go(new)
                assert f.state is new
            else:
                with pytest.raises(FailoverTransitionError):
                    f._go(new)
    # a probe is only ever started from a secondary, and failing back only after a probe
    assert {s for s, nxt in TRANSITIONS.items() if FailoverState.PROBING in nxt} == {
        FailoverState.SECONDARY}
    assert {s for s, nxt in TRANSITIONS.items() if FailoverState.FAILING_BACK in nxt} == {
        FailoverState.PROBING}


def test_a_run_of_failed_attempts_moves_to_the_next_endpoint() -> None:
    """``after_attempts`` failures in a row on the primary switch to the secondary, no sooner."""
    f = _failover(after=3)
    assert f.failed() is None and f.failed() is None
    assert f.failed() == Switch(0, 1, "failures")
    assert (f.current, f.state, f.failures) == (1, FailoverState.SECONDARY, 0)


def test_an_event_ends_the_run_of_failures() -> None:
    """Failures separated by a connection that streamed are not a run."""
    f = _failover(after=2)
    assert f.failed() is None
    f.streaming(0.0)
    assert f.failed() is None
    assert f.current == 0


def test_an_open_breaker_fails_over_at_once() -> None:
    """The breaker opening is a trigger of its own, whatever the run's length."""
    f = _failover(after=5)
    assert f.failed(breaker_opened=True) == Switch(0, 1, "breaker")


def test_failover_goes_round_the_list() -> None:
    """From the last secondary, the next endpoint is the primary again."""
    f = _failover(endpoints=3, after=1)
    assert f.failed() == Switch(0, 1, "failures")
    assert f.failed() == Switch(1, 2, "failures")
    assert f.failed() == Switch(2, 0, "failures")
    assert f.state is FailoverState.PRIMARY


def test_one_endpoint_never_switches_nor_probes() -> None:
    """The one-endpoint case is today's behaviour: no switch, no probe."""
    f = _failover(endpoints=1, after=1)
    for _ in range(5):
        assert f.failed(breaker_opened=True) is None
    f.streaming(0.0)
    assert f.probe_at is None and not f.probe_due(1e9)


def test_the_primary_is_probed_at_a_jittered_interval_while_streaming_on_a_secondary() -> None:
    """The first event on a secondary schedules a probe at interval x (0.5 + r)."""
    f = _failover(interval=100.0, r=0.9)
    _on_secondary(f, now=10.0)
    assert f.probe_at == pytest.approx(10.0 + 100.0 * 1.4)
    assert not f.probe_due(149.0) and f.probe_due(150.0)
    low = _failover(interval=100.0, r=0.0)
    _on_secondary(low, now=10.0)
    assert low.probe_at == pytest.approx(60.0)


def test_no_probe_while_failing_on_the_secondary() -> None:
    """A probe is due only while the secondary streams (never both a failover and a probe)."""
    f = _failover(after=3)
    _on_secondary(f)
    f.failed()
    assert not f.probe_due(1e9)


def test_a_failed_probe_keeps_the_secondary_and_schedules_the_next() -> None:
    """A probe that gets no answer changes nothing but the next probe's time."""
    f = _failover(interval=100.0, r=0.5)
    _on_secondary(f)
    f.probe_started()
    assert f.probe_answered(False, now=200.0) is None
    assert (f.state, f.current, f.probe_at) == (FailoverState.SECONDARY, 1, 300.0)


def test_an_answered_probe_fails_back_and_an_event_on_the_primary_completes_it() -> None:
    """The primary answered: the next attempt goes there; its first event makes it PRIMARY."""
    f = _failover()
    _on_secondary(f)
    f.probe_started()
    assert f.probe_answered(True, now=200.0) == Switch(1, 0, "failback")
    assert (f.state, f.current) == (FailoverState.FAILING_BACK, 0)
    f.streaming(201.0)
    assert f.state is FailoverState.PRIMARY and f.probe_at is None


def test_a_failback_that_fails_returns_to_the_secondary_at_once() -> None:
    """The attempt on the primary failed: back to the secondary it came from, no run needed."""
    f = _failover(endpoints=3, after=1)
    f.failed()
    f.failed()  # now on endpoint 2
    f.streaming(0.0)
    f.probe_started()
    f.probe_answered(True, 100.0)
    assert f.failed() == Switch(0, 2, "failback_failed")
    assert (f.state, f.current) == (FailoverState.SECONDARY, 2)


def test_a_drop_during_a_probe_voids_its_answer() -> None:
    """The secondary dropped while the probe ran: the late answer is ignored (never both)."""
    f = _failover(after=3)
    _on_secondary(f)
    f.probe_started()
    assert f.failed() is None
    assert f.state is FailoverState.SECONDARY
    assert f.probe_answered(True, 100.0) is None
    assert f.current == 1


def test_bad_endpoint_lists_are_refused_with_the_key_path() -> None:
    """An empty list, a repeated URL and url + endpoints together name the key."""
    base = {"name": "g", "platform": "genesys", "client_id": "c", "client_secret": "s",
            "token_url": "https://login.test/oauth/token"}
    cases = [
        ({"endpoints": []}, "streams[0].endpoints"),
        ({"endpoints": [{"url": "wss://a.test/x"}, {"url": "wss://a.test/x"}]},
         "streams[0].endpoints[1].url"),
        ({"endpoints": [{"url": "wss://a.test/x"}], "url": "wss://b.test/x"},
         "streams[0].endpoints"),
        ({"endpoints": [{"url": "https://a.test/x"}]}, "streams[0].endpoints[0].url"),
    ]
    for extra, key in cases:
        with pytest.raises(ConfigError) as err:
            parse({"streams": [{**base, **extra}]}, environ={})
        assert err.value.key == key, (extra, err.value)


def test_endpoints_inherit_the_stream_token_url() -> None:
    """Each endpoint's token URL defaults to the stream's; ``url`` alone is one endpoint."""
    cfg = parse({"streams": [{
        "name": "g", "platform": "genesys", "client_id": "c", "client_secret": "s",
        "token_url": "https://login-a.test/t",
        "endpoints": [{"url": "wss://a.test/x"},
                      {"url": "wss://b.test/x", "token_url": "https://login-b.test/t"}]}]},
        environ={})
    stream = cfg.streams[0]
    assert [(e.url, e.token_url) for e in stream.endpoint_list()] == [  # type: ignore[union-attr]
        ("wss://a.test/x", "https://login-a.test/t"), ("wss://b.test/x", "https://login-b.test/t")]
