"""A Bloom filter on the dedup key, rotating by generation: pure (no Kafka, no Faust, no clock).

Sizing (the textbook optimum): for ``n`` keys and a false-positive target ``p`` the bit count is
``m = -n ln p / (ln 2)^2`` and the probe count ``k = round(m/n ln 2)``. ``memory_factor`` lets a
deployment spend a little more memory than the optimum to buy *fewer probes* (the probe loop is
the CPU cost, one Python iteration per probe): with 1.1x the optimum bits, the smallest ``k``
that still meets ``p`` is about 40 % lower (18 instead of 30 at ``p = 1e-9``).

Probes use double hashing (Kirsch & Mitzenmacher) of one 128-bit murmur3 digest of the key,
``pos_i = (h1 + i*h2) mod m`` with ``m`` prime, so every ``h2`` in ``[1, m)`` walks ``k``
distinct positions. The digest, not the key, is what the changelog carries (16 bytes).

Time is the caller's: ``GenerationalBloom`` is told which generation is current (an integer the
caller derives from *stream* time, see ``generation_of``) and keeps the newest ``G`` generations.
A key inserted in generation ``g`` is remembered until generation ``g + G`` starts, so with
rotation period ``R`` every duplicate younger than ``(G - 1) * R`` is caught.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import mmh3

_MASKS = bytes(1 << i for i in range(8))
_LN2_SQ = math.log(2) ** 2
_DIGEST = struct.Struct("<QQ")
DIGEST_BYTES = _DIGEST.size  # 16


def digest(key: bytes) -> bytes:
    """The 128-bit murmur3 (x64) digest of a key: what the filter and the changelog use."""
    return bytes(mmh3.hash_bytes(key))


def halves(dig: bytes) -> tuple[int, int]:
    """The two 64-bit halves of a digest (the double-hashing pair)."""
    h1, h2 = _DIGEST.unpack(dig)
    return int(h1), int(h2)


def optimal_bits_per_key(p: float) -> float:
    """The information-theoretic optimum of a Bloom filter: ``-ln p / (ln 2)^2`` bits per key."""
    return -math.log(p) / _LN2_SQ


def false_positive_rate(m: int, n: int, k: int) -> float:
    """The classic estimate ``(1 - e^(-kn/m))^k`` for ``n`` keys in ``m`` bits with ``k`` probes."""
    if n <= 0:
        return 0.0
    return float((1.0 - math.exp(-k * n / m)) ** k)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for q in small:
        if n % q == 0:
            return n == q
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in small:  # deterministic for n < 3.3e24
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def next_prime(n: int) -> int:
    while not _is_prime(n):
        n += 1
    return n


@dataclass(frozen=True)
class Sizing:
    """``m`` bits and ``k`` probes for ``capacity`` keys at false-positive target ``p``."""

    capacity: int
    p: float
    m: int
    k: int

    @property
    def bytes(self) -> int:
        return (self.m + 7) // 8

    @property
    def bits_per_key(self) -> float:
        return self.m / self.capacity

    @property
    def expected_fp(self) -> float:
        """False-positive rate once ``capacity`` keys are in."""
        return false_positive_rate(self.m, self.capacity, self.k)


def size_for(capacity: int, p: float, memory_factor: float = 1.0) -> Sizing:
    """Size a filter for ``capacity`` keys at false-positive target ``p``.

    With ``memory_factor == 1`` this is the textbook ``m = -n ln p/(ln 2)^2``,
    ``k = round(m/n ln 2)``; above 1 it spends extra bits to use the fewest probes meeting ``p``.
    """
    if capacity < 1 or not 0.0 < p < 1.0 or memory_factor < 1.0:
        raise ValueError(f"bad sizing: capacity={capacity} p={p} memory_factor={memory_factor}")
    m = next_prime(max(64, math.ceil(memory_factor * capacity * optimal_bits_per_key(p))))
    k = max(1, round(m / capacity * math.log(2)))
    if memory_factor > 1.0:
        k_min = 1
        while k_min < k and false_positive_rate(m, capacity, k_min) > p:
            k_min += 1
        k = k_min
    return Sizing(capacity, p, m, k)


class BloomFilter:
    """One bit array; ``test_and_set`` is the hot path (one call per event)."""

    __slots__ = ("_bits", "_k", "_m", "set_bits", "sizing")

    def __init__(self, sizing: Sizing) -> None:
        self.sizing = sizing
        self._m = sizing.m
        self._k = range(sizing.k)
        self._bits = bytearray(sizing.bytes)
        self.set_bits = 0  # maintained incrementally: a popcount of 100 MB is not per-event work

    def test_and_set(self, h1: int, h2: int) -> bool:
        """Set the key's bits; True if they were all set already (the key is probably known)."""
        m, bits, masks = self._m, self._bits, _MASKS
        # reduce once to small ints: CPython's arithmetic fast path is for single-digit ints
        pos = h1 % m
        step = h2 % (m - 1) + 1
        new = 0
        for _ in self._k:
            byte = pos >> 3
            mask = masks[pos & 7]
            value = bits[byte]
            if not value & mask:
                bits[byte] = value | mask
                new += 1
            pos += step
            if pos >= m:
                pos -= m
        self.set_bits += new
        return new == 0

    def contains(self, h1: int, h2: int) -> bool:
        """True if every probe bit is set (stops at the first clear bit)."""
        m, bits, masks = self._m, self._bits, _MASKS
        pos = h1 % m
        step = h2 % (m - 1) + 1
        for _ in self._k:
            if not bits[pos >> 3] & masks[pos & 7]:
                return False
            pos += step
            if pos >= m:
                pos -= m
        return True

    def fill_ratio(self) -> float:
        return self.set_bits / self._m

    def estimated_fp(self) -> float:
        """Probability that an unknown key hits, from the current fill: ``fill^k``."""
        return float(self.fill_ratio() ** self.sizing.k)

    def to_bytes(self) -> bytes:
        return bytes(self._bits)


@dataclass(frozen=True)
class GenerationPolicy:
    """How a time window ``W`` is covered by ``G`` rotating generations of period ``W/(G-1)``."""

    window_s: float
    generations: int
    sizing: Sizing

    @property
    def rotation_s(self) -> float:
        return self.window_s / (self.generations - 1)

    def generation_of(self, stream_time_s: float) -> int:
        """The generation current at ``stream_time_s``: generations are aligned to a fixed grid,
        so the same record timestamps give the same generations on every worker and replay."""
        return math.floor(stream_time_s / self.rotation_s)

    @property
    def memory_bytes(self) -> int:
        """Bit arrays of one partition: ``G`` generations."""
        return self.generations * self.sizing.bytes


def policy_for(window_s: float, generations: int, events_per_window: int, p: float,
               memory_factor: float = 1.0) -> GenerationPolicy:
    """Size generations so that the *union* of ``G`` generations meets ``p``.

    Each generation receives the events of one rotation period (``events_per_window/(G-1)``), and
    a unique key is tested against all ``G`` generations, so each is sized for ``p / G`` (union
    bound): the false-drop probability per unique event stays <= ``p``.
    """
    if generations < 2:
        raise ValueError("at least two generations are needed to cover a window")
    capacity = max(1, math.ceil(events_per_window / (generations - 1)))
    return GenerationPolicy(window_s, generations,
                            size_for(capacity, p / generations, memory_factor))


class GenerationalBloom:
    """The newest ``G`` generations of Bloom filters; membership is *any* generation."""

    def __init__(self, policy: GenerationPolicy) -> None:
        self.policy = policy
        # generation id -> filter, oldest first (dicts keep insertion order)
        self.filters: dict[int, BloomFilter] = {}

    @property
    def current(self) -> int | None:
        return next(reversed(self.filters), None)

    def rotate_to(self, generation: int) -> bool:
        """Make ``generation`` the newest (dropping those ``G`` or more behind it).

        Idempotent and monotonic: an older or equal generation changes nothing (returns False),
        so replaying a changelog from any earlier point yields the same state.
        """
        current = self.current
        if current is not None and generation <= current:
            return False
        self.filters[generation] = BloomFilter(self.policy.sizing)
        oldest_kept = generation - self.policy.generations + 1
        for old in [g for g in self.filters if g < oldest_kept]:
            del self.filters[old]
        return True

    def test_and_set(self, h1: int, h2: int) -> bool:
        """True if the key is (probably) in any generation; else set it in the newest."""
        filters = list(self.filters.values())
        if not filters:
            raise RuntimeError("no generation yet: call rotate_to first")
        for older in filters[:-1]:
            if older.contains(h1, h2):
                return True
        return filters[-1].test_and_set(h1, h2)

    def contains(self, h1: int, h2: int) -> bool:
        return any(f.contains(h1, h2) for f in self.filters.values())

    def add(self, generation: int, h1: int, h2: int) -> None:
        """Set the key's bits in ``generation`` (recovery); a retired generation is ignored."""
        if generation not in self.filters:
            self.rotate_to(generation)
        target = self.filters.get(generation)
        if target is not None:
            target.test_and_set(h1, h2)

    def fill_ratio(self) -> float:
        """Fill of the newest generation (the one still filling)."""
        current = self.current
        return 0.0 if current is None else self.filters[current].fill_ratio()

    def estimated_fp(self) -> float:
        """Probability that a unique key hits any generation (union bound over generations)."""
        return min(1.0, sum(f.estimated_fp() for f in self.filters.values()))

    def state(self) -> list[tuple[int, bytes]]:
        """Every generation's id and bit array, for bit-for-bit comparison."""
        return [(g, f.to_bytes()) for g, f in self.filters.items()]
