"""Start, stop or inspect the local Apache Kafka broker (KRaft, 127.0.0.1).

The broker is fetched from Maven Central on first use into ~/.cache/ccstream (or
$CCSTREAM_CACHE), about 40 MB, once. `start` leaves it running detached; `stop` stops exactly
the processes `start` recorded in the work folder's pid file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from devtools import devkafka


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "fetch"])
    parser.add_argument("--dir", type=Path, default=None,
                        help="work folder (default $CCSTREAM_KAFKA_DIR or /tmp/ccstream-kafka)")
    parser.add_argument("--brokers", type=int, default=1, choices=[1, 3],
                        help="1 broker, or a 3-broker cluster (replication 3, min ISR 2)")


def main(args: argparse.Namespace) -> int:
    workdir: Path = args.dir or devkafka.default_workdir()
    try:
        if args.action == "fetch":
            print(devkafka.fetch())
            return 0
        if args.action == "stop":
            stopped = devkafka.stop_detached(workdir)
            print(f"stopped {stopped} broker(s)")
            return 0
        running = [row for row in devkafka.read_pidfile(workdir) if devkafka.is_alive(row[1])]
        if args.action == "status":
            for node_id, pid, address in running:
                print(f"node {node_id} pid {pid} at {address}")
            if not running:
                print("no local broker running")
            return 0 if running else 1
        if running:
            print(",".join(row[2] for row in running))
            return 0
        cluster = devkafka.KafkaCluster(workdir, size=args.brokers, tied=False)
        cluster.start()
        print(cluster.bootstrap_servers)
        return 0
    except devkafka.DevKafkaError as err:
        print(f"ccstream kafka: {err}", file=sys.stderr)
        return 1
