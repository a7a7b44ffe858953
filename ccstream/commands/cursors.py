"""Show each stream's committed cursor, as read back from the compacted cursor topic.

One line per stream of the configuration: name, platform, the resume point (`since=` or
`cursor=` for the guide's flavours; `watermark=` and `open_gaps=` for Genesys Cloud; each
endpoint's `lastPollTime` and `open_gaps=` for CXone), when it was committed and, in cluster
mode, by which instance (`owner=`, the client id `ccstream owners` shows); streams without a
cursor say so. Streams found in the topic but not in the configuration are listed too,
marked as such.
"""

from __future__ import annotations

import argparse
import asyncio

from ccstream.config import Config, load
from connectors.kafka import cursor_store


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the TOML configuration (docs/kafka.md)")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    stored = asyncio.run(cursor_store.load(config.kafka.bootstrap_servers, config.topics.cursors))
    for line in render(config, stored):
        print(line)
    return 0


def render(config: Config, stored: dict[str, cursor_store.StoredCursor]) -> list[str]:
    lines = []
    known = {s.name for s in config.streams}
    for stream in config.streams:
        cursor = stored.get(stream.name)
        if cursor is None:
            lines.append(f"{stream.name}\t{stream.platform}\t(no cursor committed)")
        else:
            lines.append(f"{stream.name}\t{cursor.platform}\t{cursor.describe()}"
                         f"\tupdated_at={cursor.updated_at}{_owner(cursor)}")
    for name in sorted(set(stored) - known):
        cursor = stored[name]
        lines.append(f"{name}\t{cursor.platform}\t{cursor.describe()}"
                     f"\tupdated_at={cursor.updated_at}{_owner(cursor)}"
                     "\t(not in the configuration)")
    return lines


def _owner(cursor: cursor_store.StoredCursor) -> str:
    return f"\towner={cursor.owner}" if cursor.owner else ""
