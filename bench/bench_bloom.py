"""Cost of the pure Bloom filter: time per test-and-set, memory per key, changelog bytes per event.

    .venv/bin/python bench/bench_bloom.py [--keys 200000] [--capacity 1000000] [--p 1e-9]

Figures printed: microseconds per test-and-set (new keys and repeats, with and without hashing)
for the textbook sizing (memory_factor 1.0) and for 10 % more memory (fewest probes meeting p);
bits per key against the optimum -ln p / (ln 2)^2; changelog bytes per forwarded event as the
dedup agent writes them (one op record per event: key, value and Kafka's per-record overhead).
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline import bloom
from pipeline.dedup.state import PartitionDedup

RECORD_OVERHEAD = 8  # a v2 record in a batch: length, attributes, deltas, key/value lengths


def _keys(n: int, prefix: str) -> list[bytes]:
    return [f"interaction.routed|{prefix}-{i}|2024-01-15T10:30:{i % 60:02d}.{i % 1000:03d}Z"
            .encode() for i in range(n)]


def _time(fn, items) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        fn(items)
        best = min(best, time.perf_counter() - start)
    return best / len(items) * 1e6


def bench_filter(capacity: int, p: float, factor: float, keys: list[bytes]) -> None:
    sizing = bloom.size_for(capacity, p, factor)
    pairs = [bloom.halves(bloom.digest(k)) for k in keys]

    def insert(items: list[tuple[int, int]]) -> None:
        f = bloom.BloomFilter(sizing)
        tas = f.test_and_set
        for h1, h2 in items:
            tas(h1, h2)

    filled = bloom.BloomFilter(sizing)
    for h1, h2 in pairs:
        filled.test_and_set(h1, h2)

    def repeat(items: list[tuple[int, int]]) -> None:
        tas = filled.test_and_set
        for h1, h2 in items:
            tas(h1, h2)

    def hashed(items: list[bytes]) -> None:
        f = bloom.BloomFilter(sizing)
        tas, dig, halves = f.test_and_set, bloom.digest, bloom.halves
        for k in items:
            tas(*halves(dig(k)))

    optimum = bloom.optimal_bits_per_key(p)
    print(f"p={p:g} capacity={capacity} memory_factor={factor}: m={sizing.m} bits "
          f"({sizing.bytes / 2**20:.1f} MiB) k={sizing.k} expected fp at capacity="
          f"{sizing.expected_fp:.2e}")
    print(f"  bits/key {sizing.bits_per_key:.2f} vs optimum {optimum:.2f}: "
          f"{sizing.bits_per_key / optimum:.3f}x")
    print(f"  test-and-set, new key:      {_time(insert, pairs):6.2f} us")
    print(f"  test-and-set, repeated key: {_time(repeat, pairs):6.2f} us")
    print(f"  hash + test-and-set, new:   {_time(hashed, keys):6.2f} us")


def bench_changelog(keys: list[bytes]) -> None:
    for strict in (False, True):
        policy = bloom.policy_for(86_400.0, 3, 20_000_000, 1e-6)
        state = PartitionDedup(policy, strict=strict)
        total = records = 0
        for i, key in enumerate(keys):
            state.decide(key, 1_700_000_000.0 + i * 0.01)
            for op, value in state.drain():  # the agent drains once per event
                total += len(op) + len(value) + RECORD_OVERHEAD
                records += 1
        print(f"changelog ({'strict' if strict else 'bloom'}): {total / len(keys):.1f} bytes "
              f"per forwarded event ({records} op records for {len(keys)} events, "
              f"incl. {RECORD_OVERHEAD} B record overhead; key and value "
              f"{(total - records * RECORD_OVERHEAD) / len(keys):.1f} B)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--capacity", type=int, default=1_000_000)
    parser.add_argument("--p", type=float, default=1e-9)
    args = parser.parse_args()
    print("command:", " ".join([sys.executable, *sys.argv]))
    keys = _keys(args.keys, "corr")
    for factor in (1.0, 1.1):
        bench_filter(args.capacity, args.p, factor, keys)
    bench_changelog(keys[:50_000])


if __name__ == "__main__":
    main()
