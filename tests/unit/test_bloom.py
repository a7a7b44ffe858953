"""Pure unit tests of the Bloom filter: sizing, test-and-set, generations, false-positive rate."""

from __future__ import annotations

import math

import pytest

from pipeline import bloom


def _keys(prefix: str, n: int) -> list[bytes]:
    return [bloom.digest(f"{prefix}|{i}|2024-01-15T10:30:00.000Z".encode()) for i in range(n)]


def test_textbook_sizing() -> None:
    """With no extra memory the sizing is m = -n ln p/(ln 2)^2 and k = round(m/n ln 2)."""
    s = bloom.size_for(1_000_000, 1e-9)
    optimum = 1_000_000 * -math.log(1e-9) / math.log(2) ** 2
    assert optimum <= s.m < optimum * 1.001
    assert s.k == round(s.m / 1_000_000 * math.log(2)) == 30


def test_memory_factor_buys_fewer_probes_within_target() -> None:
    """Spending 10 % more bits than the optimum keeps p but needs far fewer probes."""
    s = bloom.size_for(1_000_000, 1e-9, memory_factor=1.1)
    assert s.bits_per_key <= 1.1 * bloom.optimal_bits_per_key(1e-9) * 1.001
    assert s.expected_fp <= 1e-9
    assert s.k < 20


def test_bad_sizing_is_refused() -> None:
    """A capacity of zero, p outside (0, 1) or less than the optimum memory are errors."""
    for args in ((0, 0.01, 1.0), (10, 1.5, 1.0), (10, 0.01, 0.9)):
        with pytest.raises(ValueError):
            bloom.size_for(*args)


def test_test_and_set_reports_second_insert() -> None:
    """The first test-and-set of a key answers 'new', every later one 'seen'."""
    f = bloom.BloomFilter(bloom.size_for(1000, 1e-6))
    p = f.probe(bloom.digest(b"interaction.routed|c1|t"))
    assert f.test_and_set(p) is False
    assert f.contains(p)
    assert f.test_and_set(p) is True
    assert f.set_bits == f.sizing.k == int.from_bytes(f.to_bytes(), "little").bit_count()


def test_fill_and_estimated_fp_grow_with_keys() -> None:
    """The fill ratio and the estimated FP rate match the classic estimate at capacity."""
    s = bloom.size_for(10_000, 1e-3)
    f = bloom.BloomFilter(s)
    for dig in _keys("fill", 10_000):
        f.test_and_set(f.probe(dig))
    assert f.fill_ratio() == pytest.approx(0.5, abs=0.02)
    assert f.estimated_fp() == pytest.approx(1e-3, rel=0.3)
    assert f.set_bits == int.from_bytes(f.to_bytes(), "little").bit_count()


def test_measured_fp_rate_on_a_million_keys_is_within_2x_of_target() -> None:
    """1,000,000 distinct unseen keys against a full filter hit at a rate within 2x of p."""
    p = 2e-3
    f = bloom.BloomFilter(bloom.size_for(200_000, p))
    for dig in _keys("in", 200_000):
        f.test_and_set(f.probe(dig))
    hits = sum(f.contains(f.probe(dig)) for dig in _keys("out", 1_000_000))
    assert p / 2 <= hits / 1_000_000 <= 2 * p


def test_generations_remember_for_g_minus_1_rotations() -> None:
    """A key is caught while fewer than G rotations have passed, then forgotten."""
    policy = bloom.policy_for(window_s=200.0, generations=3, events_per_window=1000, p=1e-6)
    assert policy.rotation_s == 100.0
    g = bloom.GenerationalBloom(policy)
    h = bloom.digest(b"k")
    g.rotate_to(policy.generation_of(50.0))
    assert g.test_and_set(h) is False
    g.rotate_to(policy.generation_of(150.0))
    assert g.test_and_set(h) is True  # still in generation 0
    g.rotate_to(policy.generation_of(250.0))
    assert g.test_and_set(h) is True  # age 200 = W: still caught
    g.rotate_to(policy.generation_of(300.0))
    assert g.test_and_set(h) is False  # generation 0 retired
    assert list(g.filters) == [1, 2, 3]


def test_rotate_to_is_monotonic_and_idempotent() -> None:
    """Rotating to the current or an older generation changes nothing."""
    g = bloom.GenerationalBloom(bloom.policy_for(10.0, 3, 100, 1e-3))
    assert g.rotate_to(5) is True
    assert g.rotate_to(5) is False
    assert g.rotate_to(4) is False
    assert list(g.filters) == [5]


def test_union_of_generations_meets_target() -> None:
    """Each generation is sized for p/G so that the union of G full generations stays <= p."""
    policy = bloom.policy_for(20.0, 3, 40_000, 3e-3)
    g = bloom.GenerationalBloom(policy)
    for gen in range(3):
        g.rotate_to(gen)
        for dig in _keys(f"gen{gen}", 20_000):
            g.test_and_set(dig)
    hits = sum(g.contains(dig) for dig in _keys("fresh", 200_000))
    assert hits / 200_000 <= 2 * 3e-3
    assert g.estimated_fp() <= 3e-3 * 1.2


def test_a_probe_is_k_distinct_bytes_one_bit_each_wrapping_at_most_once() -> None:
    """Every probe sets exactly k bits, one in each of k distinct bytes of an arithmetic
    progression modulo the array size, including progressions that wrap past the end."""
    sizing = bloom.size_for(2_000, 1e-6)
    n, k = sizing.bytes, sizing.k
    assert k * sizing.max_step <= n // 8
    wrapped = 0
    for dig in _keys("layout", 3_000):
        f = bloom.BloomFilter(sizing)
        start, step, mask = p = f.probe(dig)
        assert 0 <= start < n and 1 <= step <= sizing.max_step
        assert all(((mask >> 8 * i) & 0xFF).bit_count() == 1 for i in range(k))
        assert f.test_and_set(p) is False
        expected = {(start + i * step) % n for i in range(k)}
        assert {i for i, b in enumerate(f.to_bytes()) if b} == expected
        assert f.set_bits == k == int.from_bytes(f.to_bytes(), "little").bit_count()
        assert f.contains(p) and f.test_and_set(p) is True
        wrapped += start + k * step > n
    assert wrapped > 0  # the two-slice path was exercised


def test_measured_fp_rate_with_many_probes_is_within_2x_of_the_estimate() -> None:
    """At k > 32 the probe mask needs more than one extra hash; the rate still follows
    (1 - e^(-kn/m))^k (here about 1e-4 with k = 40, measured on 1,000,000 unseen keys)."""
    f = bloom.BloomFilter(bloom.Sizing(20_000, 1e-4, 8 * 64_000, 40))
    for dig in _keys("many-in", 20_000):
        f.test_and_set(f.probe(dig))
    expected = f.sizing.expected_fp
    assert 5e-5 < expected < 2e-4
    hits = sum(f.contains(f.probe(dig)) for dig in _keys("many-out", 1_000_000))
    assert expected / 2 <= hits / 1_000_000 <= 2 * expected
