"""Run the Faust dedup worker: raw -> clean, each dedup key exactly once.

Reads the raw topic, drops duplicates of (eventType, correlationId, timestamp) seen within the
configured window ([dedup] window_s) with a changelogged, rotating Bloom filter, and writes each
distinct event once to the clean topic, in Kafka transactions (read clean with
isolation_level=read_committed). Several workers with the same [dedup] app_id share the raw
topic's partitions. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import sys

from ccstream import logs
from ccstream.config import load


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="TOML configuration")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)  # bad configuration: one line, before any process is started
    from pipeline import faust_compat, supervisor

    faust_compat.check()  # an unsupported faust: one line (exit 2), before any process is started

    if supervisor.is_child():
        from pipeline.dedup.worker import run

        return run(config)
    # the worker itself runs in a child that is restarted when it stopped to stay safe
    from pipeline.dedup.app import EXIT_NO_COMMIT

    logs.configure(config.log.level, config.log.format)
    argv = [sys.executable, "-m", "pipeline", "dedup", "--config", str(args.config)]
    return supervisor.supervise(argv, frozenset({EXIT_NO_COMMIT}))
