"""Run the source connector for every stream of the configuration until SIGTERM/SIGINT.

Each [[streams]] entry gets its own WebSocket session (Genesys `since` or NICE `cursor`
resumption), events go to the raw topic, bad frames to the DLQ topic, and each stream's resume
point to the compacted cursor topic once Kafka has acknowledged everything before it.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT: sockets closed with 1000, producer
flushed, cursors committed, within the grace period); 1 with one line on stderr when every stream
stopped on bad credentials (401 invalid_client) or a missing permission (403), or has its circuit
breaker open; 2 for a bad configuration. A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ccstream import logs
from ccstream.config import Config, load


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the TOML configuration (docs/kafka.md)")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    logs.configure(config.log.level, config.log.format)
    return asyncio.run(_run(config))


async def _run(config: Config) -> int:
    from connectors.runner import Runner  # aiokafka/websockets only when actually connecting

    runner = Runner(config)
    runner.install_signal_handlers()
    outcome = await runner.run()
    if outcome.code != 0:
        print(f"ccstream connect: {outcome.message}", file=sys.stderr)
    return outcome.code
