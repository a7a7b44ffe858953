"""Cost of the pure Bloom filter: time per test-and-set, memory per key, changelog bytes per event.

    .venv/bin/python bench/bench_bloom.py [--keys 200000] [--capacity 1000000] [--p 1e-9]

Figures printed: microseconds per test-and-set (new keys and repeats, with and without hashing)
for the textbook sizing (memory_factor 1.0) and for 10 % more memory (fewest probes meeting p),
against the baseline of the same run: the classic Bloom probe loop (one Python iteration per
probe, Kirsch-Mitzenmacher double hashing), which pipeline/bloom.py used before its byte-slice
layout; bits per key against the optimum -ln p / (ln 2)^2; changelog bytes per event as the
dedup agent writes them (key, value and Kafka's per-record overhead).
"""

from __future__ import annotations

import argparse
import struct
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


class ClassicBloom:
    """The baseline: k bits at (h1 + i*h2) mod m, tested and set one Python iteration each."""

    _MASKS = bytes(1 << i for i in range(8))

    def __init__(self, sizing: bloom.Sizing) -> None:
        self.m, self.k = sizing.m, range(sizing.k)
        self.bits = bytearray(sizing.bytes)

    def test_and_set(self, h1: int, h2: int) -> bool:
        m, bits, masks = self.m, self.bits, self._MASKS
        pos, step, new = h1 % m, h2 % (m - 1) + 1, 0
        for _ in self.k:
            byte, mask = pos >> 3, masks[pos & 7]
            value = bits[byte]
            if not value & mask:
                bits[byte] = value | mask
                new += 1
            pos += step
            if pos >= m:
                pos -= m
        return new == 0


def bench_filter(capacity: int, p: float, factor: float, keys: list[bytes]) -> None:
    sizing = bloom.size_for(capacity, p, factor)
    digests = [bloom.digest(k) for k in keys]
    pairs = [struct.unpack("<QQ", d) for d in digests]
    prober = bloom.Prober(sizing)

    def insert(items: list[bytes]) -> None:
        f = bloom.BloomFilter(sizing)
        tas, probe = f.test_and_set, prober
        for d in items:
            tas(probe(d))

    filled = bloom.BloomFilter(sizing)
    for d in digests:
        filled.test_and_set(prober(d))

    def repeat(items: list[bytes]) -> None:
        tas, probe = filled.test_and_set, prober
        for d in items:
            tas(probe(d))

    def hashed(items: list[bytes]) -> None:
        f = bloom.BloomFilter(sizing)
        tas, dig, probe = f.test_and_set, bloom.digest, prober
        for k in items:
            tas(probe(dig(k)))

    older = bloom.BloomFilter(sizing)  # as full as ``filled``, with other keys
    for k in keys:
        older.test_and_set(prober(bloom.digest(b"old|" + k)))

    def generations(items: list[bytes]) -> None:
        # the agent's call: a key tested against G = 3 generations (two full), set in the newest
        g = bloom.GenerationalBloom(bloom.GenerationPolicy(1.0, 3, sizing))
        g.filters = {0: older, 1: older, 2: bloom.BloomFilter(sizing)}
        tas = g.test_and_set
        for d in items:
            tas(d)

    def classic(items: list[tuple[int, int]]) -> None:
        tas = ClassicBloom(sizing).test_and_set
        for h1, h2 in items:
            tas(h1, h2)

    optimum = bloom.optimal_bits_per_key(p)
    print(f"p={p:g} capacity={capacity} memory_factor={factor}: m={sizing.m} bits "
          f"({sizing.bytes / 2**20:.1f} MiB) k={sizing.k} expected fp at capacity="
          f"{sizing.expected_fp:.2e}")
    print(f"  bits/key {sizing.bits_per_key:.2f} vs optimum {optimum:.2f}: "
          f"{sizing.bits_per_key / optimum:.3f}x")
    new, base = _time(insert, digests), _time(classic, pairs)
    print(f"  test-and-set, new key:      {new:6.2f} us   (baseline, classic probe loop: "
          f"{base:.2f} us; ratio {base / new:.2f}x faster)")
    print(f"  test-and-set, repeated key: {_time(repeat, digests):6.2f} us")
    print(f"  hash + test-and-set, new:   {_time(hashed, keys):6.2f} us")
    print(f"  3 generations, new key:     {_time(generations, digests):6.2f} us "
          f"(two full older generations tested first, as the agent does)")


def bench_changelog(keys: list[bytes]) -> None:
    """Changelog bytes per event as the agent writes them: it drains the ops once per batch
    (``[dedup] batch_max_events``, or fewer when traffic is light): one event per batch is the
    worst case, a full batch the busy case."""
    for strict in (False, True):
        for batch in (1, 100, 500):
            policy = bloom.policy_for(86_400.0, 3, 20_000_000, 1e-6)
            state = PartitionDedup(policy, strict=strict)
            total = records = 0
            for i, key in enumerate(keys):
                state.decide(key, 1_700_000_000.0 + i * 0.01)
                state.judged(i)  # the raw offset, carried in the last op's key
                if i % batch == batch - 1:
                    for op, value in state.drain():
                        total += len(op) + len(value) + RECORD_OVERHEAD
                        records += 1
            print(f"changelog ({'strict' if strict else 'bloom'}, {batch:3d} events per batch):"
                  f" {total / len(keys):5.1f} bytes per forwarded event ({records} op records "
                  f"for {len(keys)} events, incl. {RECORD_OVERHEAD} B record overhead)")


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
