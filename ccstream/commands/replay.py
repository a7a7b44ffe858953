"""Reprocess raw events from TIME into clean without duplicating what clean holds.

Re-injects the raw records whose Kafka timestamp is >= TIME into their own raw partitions,
marked with a ccstream-replay header; the running dedup worker ([dedup] app_id) drops every
copy of an event already in clean (within the window [dedup] window_s) and forwards the rest
once. Waits until the worker has committed past the injected records, then prints how many
were forwarded and how many dropped. TIME is RFC 3339 (2024-01-15T10:30:00Z) or epoch seconds.
Exit 0 when the worker finished in time, 1 when it did not (the counts are then partial).
"""

from __future__ import annotations

import argparse
import asyncio

from ccstream.config import load


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")
    parser.add_argument("--since", required=True, metavar="TIME",
                        help="RFC 3339 UTC time or epoch seconds")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for the dedup worker (default 300)")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    from pipeline.dedup.replay import parse_since, replay

    report = asyncio.run(replay(config, parse_since(args.since), args.timeout))
    print(report.line())
    return 0 if report.complete else 1
