"""Herd behaviour: 1,000 streams dropped at once, reconnecting through ccstream's own policies.

Two models, both driven by the real pure policies (``connectors.policy.backoff.Backoff``,
``connectors.salt.salted_random``, ``connectors.policy.ratelimit.TokenBucket``) on a simulated
clock:

1. **Reconnect herd** (the integration guide's "Thundering herd on regional failover"):
   ``--streams`` streams spread over ``--hosts`` identical deployment nodes are all dropped at t=0.
   The platform admits at most ``--capacity`` handshakes per 100 ms window; beyond that it answers
   429 (no Retry-After in this model, so that only the client policy spreads the load) and the
   stream backs off. Reported per variant: peak handshakes per 100 ms, time until every stream is
   back, total handshake attempts. Variants: jitter default / full / decorrelated / none, with and
   without the per-host cap, with and without the instance salt (without it, identical nodes draw
   identical jitter: the synchronised waves the guide warns about).
2. **Contention for one resource**, the set-up of the published "Exponential Backoff And Jitter"
   simulation (AWS Architecture Blog, 2015): N clients each make one write to a resource with
   optimistic concurrency; a write that lands within ``--conflict-ms`` of another write fails and
   is retried after the backoff. Reported: calls made and completion time, per jitter kind.
   The published result to compare with: no jitter makes by far the most calls; full and
   decorrelated jitter make the fewest; full jitter completes soonest.

Run: ``.venv/bin/python bench/bench_herd.py [--png bench/results/herd.png]``. Prints tables (and
the command), says claim by claim whether the contention model reproduces the published
ordering, and draws the chart (``bench/results/herd.png`` by default).
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ccstream.config import JitterKind
from connectors.policy.backoff import Backoff
from connectors.policy.ratelimit import TokenBucket
from connectors.salt import salted_random

JITTERS: tuple[JitterKind, ...] = ("default", "full", "decorrelated", "none")
WINDOW_S = 0.1
CHART_MAX_S = 40.0
DEFAULT_PNG = Path(__file__).resolve().parent / "results" / "herd.png"


@dataclass
class HerdResult:
    jitter: str
    cap: bool
    salt: bool
    peak_per_100ms: int
    all_back_s: float
    attempts: int
    histogram: Counter[int]
    capacity: int = 0


def reconnect_herd(args: argparse.Namespace, jitter: JitterKind, cap: bool,
                   salt: bool) -> HerdResult:
    """Event-driven simulation of every stream reconnecting after a mass drop at t=0."""
    per_host = args.streams // args.hosts
    queue: list[tuple[float, int, int, bool]] = []  # (time, stream, attempt, token reserved)
    backoffs: list[Backoff] = []
    buckets = [TokenBucket(args.host_rate, args.host_burst, 0.0) for _ in range(args.hosts)]
    for i in range(args.streams):
        host = i // per_host
        # identical nodes run identically named streams; only the salt tells them apart
        node_salt = f"host-{host}".encode() if salt else b"same-image"
        rand = salted_random(node_salt, f"stream-{i % per_host}")
        backoffs.append(Backoff(args.base, args.max, jitter, rand.random))
        heapq.heappush(queue, (backoffs[i].delay(0), i, 0, False))
    admitted: Counter[int] = Counter()
    histogram: Counter[int] = Counter()
    attempts, last_back = 0, 0.0
    while queue:
        t, i, attempt, reserved = heapq.heappop(queue)
        if cap and not reserved:
            wait = buckets[i // per_host].reserve(t)
            if wait > 0:  # the driver sleeps until its reserved token, then makes the attempt
                heapq.heappush(queue, (t + wait, i, attempt, True))
                continue
        window = int(t / WINDOW_S)
        attempts += 1
        histogram[window] += 1
        if admitted[window] < args.capacity:
            admitted[window] += 1
            last_back = max(last_back, t)
        else:
            heapq.heappush(queue, (t + backoffs[i].delay(attempt + 1), i, attempt + 1, False))
    return HerdResult(jitter, cap, salt, max(histogram.values()), last_back, attempts, histogram,
                      args.capacity)


@dataclass
class OccResult:
    jitter: str
    calls: int
    completion_ms: float


def contention(args: argparse.Namespace, jitter: JitterKind, seed: int) -> OccResult:
    """N clients, one write each, optimistic concurrency: overlapping writes fail and retry."""
    rng = random.Random(seed)
    base, cap = args.occ_base_ms, args.occ_max_ms
    backoffs = [Backoff(base, cap, jitter, random.Random(rng.random()).random)
                for _ in range(args.clients)]
    queue = [(abs(rng.normalvariate(10.0, 2.0)), c, 0) for c in range(args.clients)]
    heapq.heapify(queue)
    last_write = -1e9
    calls, done_at = 0, 0.0
    while queue:
        t, client, attempt = heapq.heappop(queue)
        calls += 1
        if t - last_write >= args.conflict_ms:
            last_write, done_at = t, t
            continue
        last_write = t  # the failed write still occupied the resource
        retry_at = t + backoffs[client].delay(attempt) + abs(rng.normalvariate(10.0, 2.0))
        heapq.heappush(queue, (retry_at, client, attempt + 1))
    return OccResult(jitter, calls, done_at)


def _draw(results: list[HerdResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results if r.salt and r.cap] + [r for r in results if not r.salt
                                                         and not r.cap]
    # one x range for every panel, cut at CHART_MAX_S: an uncapped run without jitter lasts
    # minutes and would squeeze every other panel into a sliver (its title says how long)
    span = min(CHART_MAX_S, max(r.all_back_s for r in shown) + 1.0)
    fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.0 * len(shown)), sharex=True)
    for axis, result in zip(axes, shown, strict=True):
        xs = sorted(result.histogram)
        axis.bar([x * WINDOW_S for x in xs], [result.histogram[x] for x in xs], width=WINDOW_S,
                 align="edge")
        axis.axhline(result.capacity, color="red", linewidth=0.8, linestyle="--")
        axis.set_xlim(0, span)
        axis.set_ylabel("per 100 ms")
        cut = f" (shown to {span:.0f} s)" if result.all_back_s > span else ""
        axis.set_title(f"jitter={result.jitter} cap={'on' if result.cap else 'off'} "
                       f"salt={'on' if result.salt else 'off'}: peak {result.peak_per_100ms}, "
                       f"all back {result.all_back_s:.1f} s{cut}, {result.attempts} attempts",
                       fontsize="small")
    axes[-1].set_xlabel("seconds after the mass drop (dashed: handshakes the platform admits)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _agreement(occ: dict[JitterKind, list[OccResult]], runs: int) -> None:
    """Say, claim by claim, whether this run reproduces the published ordering."""
    calls = {str(j): sum(r.calls for r in rs) / runs for j, rs in occ.items()}
    done = {str(j): sum(r.completion_ms for r in rs) / runs for j, rs in occ.items()}
    fewest = [j for j, _ in sorted(calls.items(), key=lambda item: item[1])]
    soonest = [j for j, _ in sorted(done.items(), key=lambda item: item[1])]
    checks = [
        ("no jitter makes the most calls", fewest[-1] == "none"),
        ("full and decorrelated among the two fewest calls",
         {"full", "decorrelated"} <= set(fewest[:2])),
        ("full jitter completes soonest", soonest[0] == "full"),
    ]
    print("this run vs published: " + "; ".join(
        f"{claim}: {'yes' if ok else 'no'}" for claim, ok in checks))
    print(f"  (fewest calls: {', '.join(fewest)}; soonest done: {', '.join(soonest)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=50, help="handshakes per 100 ms")
    parser.add_argument("--base", type=float, default=1.0)
    parser.add_argument("--max", type=float, default=30.0)
    parser.add_argument("--host-rate", type=float, default=5.0, help="per-host reconnects/s")
    parser.add_argument("--host-burst", type=int, default=5)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--occ-base-ms", type=float, default=5.0)
    parser.add_argument("--occ-max-ms", type=float, default=2000.0)
    parser.add_argument("--conflict-ms", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=20, help="contention runs averaged")
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG,
                        help="chart of handshakes per 100 ms (default %(default)s)")
    args = parser.parse_args(argv)
    print("command:", " ".join([sys.executable, *sys.argv]))
    print(f"\n1. reconnect herd: {args.streams} streams on {args.hosts} hosts dropped at once; "
          f"platform admits {args.capacity} handshakes/100 ms; backoff base {args.base} s, "
          f"max {args.max} s; per-host cap {args.host_rate}/s burst {args.host_burst}")
    print(f"{'jitter':13} {'cap':4} {'salt':5} {'peak/100ms':>10} {'all back s':>10} "
          f"{'attempts':>9} {'attempts/stream':>15}")
    results = []
    for jitter in JITTERS:
        for cap in (True, False):
            for salt in (True, False):
                r = reconnect_herd(args, jitter, cap, salt)
                results.append(r)
                print(f"{jitter:13} {'on' if cap else 'off':4} {'on' if salt else 'off':5} "
                      f"{r.peak_per_100ms:10d} {r.all_back_s:10.1f} {r.attempts:9d} "
                      f"{r.attempts / args.streams:15.2f}")
    print(f"\n2. contention for one resource ({args.clients} clients, one write each, "
          f"conflict window {args.conflict_ms} ms, base {args.occ_base_ms} ms, cap "
          f"{args.occ_max_ms} ms; mean of {args.runs} runs)")
    print(f"{'jitter':13} {'calls':>8} {'completion ms':>14} {'calls vs none':>14}")
    occ = {j: [contention(args, j, seed) for seed in range(args.runs)] for j in JITTERS}
    none_calls = sum(r.calls for r in occ["none"]) / args.runs
    for jitter, runs in occ.items():
        calls = sum(r.calls for r in runs) / args.runs
        completion = sum(r.completion_ms for r in runs) / args.runs
        print(f"{jitter:13} {calls:8.0f} {completion:14.0f} {calls / none_calls:14.2f}")
    print("published (AWS Architecture Blog): no jitter makes the most calls; full and "
          "decorrelated jitter the fewest; full jitter completes soonest.")
    _agreement(occ, args.runs)
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        _draw(results, args.png)
        print(f"chart: {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
