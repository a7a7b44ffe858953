"""Pre-flight: the configuration, Kafka and its topics, each credential, each endpoint.

One line per check, ``OK`` or ``FAIL`` with the one problem and its fix; exit 0 when every check
passed, 1 when one failed, 2 when the file itself is not a valid configuration. Nothing is
written anywhere: no producer is started, missing topics are validated by the broker
(``validate_only``) and not created, no channel or subscription is made.

* kafka: one metadata round trip; each topic exists (the cursor topic compacted) or the broker
  accepts creating it with the configured partitions and replication factor;
* credentials: each distinct credential gets a token (guide flavours and Genesys Cloud: the
  client-credentials grant; CXone: discovery, then the access-key token and the API base);
* endpoints: the guide flavours open each endpoint's socket (every region of a failover list)
  and close it with 1000 without reading an event; Genesys Cloud reads page 1 of the queue (or
  user) listing the topics need; CXone makes one ``updatedSince`` poll per configured endpoint (a
  read: the platform keeps no state for it and its rows are dropped, docs/operations.md);
* proxies: the proxy each stream goes through, if any, is named (its password never).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ccstream import logs
from ccstream.config import (
    Config,
    ConfigError,
    CxoneStream,
    GenesysCloudStream,
    StreamConfig,
    load,
)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Line:
    ok: bool
    what: str
    detail: str
    fix: str = ""

    def render(self) -> str:
        text = f"{'OK' if self.ok else 'FAIL':<4}  {self.what}: {self.detail}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


Emit = Callable[[Line], None]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the TOML configuration (docs/kafka.md)")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the log lines of the checks (stderr)")


def main(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as err:
        print(Line(False, "config", str(err), "correct the key named").render())
        return EXIT_CONFIG
    if getattr(args, "verbose", False):
        logs.configure(config.log.level, config.log.format, stream=sys.stderr)
    else:  # the lines below say everything; library warnings would only repeat them
        logging.getLogger().addHandler(logging.NullHandler())
    return asyncio.run(check(config, args.config, lambda line: print(line.render(), flush=True)))


async def check(config: Config, path: str, emit: Emit) -> int:
    """Every check of ``config`` in order, each line to ``emit``; the exit status."""
    failed = False

    def out(line: Line) -> None:
        nonlocal failed
        failed = failed or not line.ok
        emit(line)

    windows = f", {len(config.maintenance)} maintenance window(s)" if config.maintenance else ""
    out(Line(True, "config", f"{path}: {len(config.streams)} stream(s){windows}"))
    if not config.streams:
        out(Line(False, "config", "no [[streams]]", "add a [[streams]] entry"))
    await _kafka(config, out)
    await _platforms(config, out)
    return EXIT_FAILED if failed else EXIT_OK


# -- Kafka ----------------------------------------------------------------------------------------
async def _kafka(config: Config, out: Emit) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    k = config.kafka
    timeout = min(k.request_timeout_s, config.connector.open_timeout_s)
    admin = AIOKafkaAdminClient(bootstrap_servers=k.bootstrap_servers, client_id=k.client_id,
                                request_timeout_ms=int(timeout * 1000))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
    except Exception as err:  # noqa: BLE001 (any failure is the one problem of this line)
        out(Line(False, "kafka", f"{k.bootstrap_servers}: no answer ({type(err).__name__})",
                 "check [kafka] bootstrap_servers and that the brokers are reachable from here"))
        await admin.close()
        return
    try:
        brokers = len(cluster.get("brokers", [])) if isinstance(cluster, dict) else 0
        out(Line(True, "kafka", f"{k.bootstrap_servers}: {brokers} broker(s) answered"))
        await _topics(config, admin, brokers, out)
    finally:
        await admin.close()


async def _topics(config: Config, admin: Any, brokers: int, out: Emit) -> None:
    from aiokafka.admin import NewTopic

    from ccstream.topics import contract_topics, topic_config

    existing = set(await admin.list_topics())
    for spec in contract_topics(config):
        what = f"topic {spec.name}"
        if spec.name in existing:
            line = Line(True, what, "exists (used as it is)")
            if spec.configs.get("cleanup.policy") == "compact":
                policy = (await topic_config(config.kafka.bootstrap_servers,
                                             spec.name)).get("cleanup.policy", "")
                line = Line("compact" in policy, what, f"exists, cleanup.policy={policy}",
                            "" if "compact" in policy else
                            "kafka-configs --alter --entity-type topics --entity-name "
                            f"{spec.name} --add-config cleanup.policy=compact")
            out(line)
            continue
        answer = await admin.create_topics([NewTopic(
            spec.name, spec.partitions, spec.replication_factor,
            topic_configs=dict(spec.configs))], validate_only=True)
        errors = [e for e in getattr(answer, "topic_errors", []) if e[1] != 0]
        if not errors:
            out(Line(True, what, f"missing: the broker accepts creating it ({spec.partitions} "
                               f"partition(s), replication {spec.replication_factor}); "
                               "ccstream connect creates it"))
            continue
        message = (errors[0][2] if len(errors[0]) > 2 else "") or f"error {errors[0][1]}"
        fix = ("set [kafka] replication_factor to at most the broker count "
               f"({brokers})" if spec.replication_factor > brokers else
               "create it by hand, or correct [kafka] partitions / replication_factor")
        out(Line(False, what, f"missing, and cannot be created: {message}", fix))


# -- credentials and endpoints ---------------------------------------------------------------------
async def _platforms(config: Config, out: Emit) -> None:
    from ccstream.commands import check_platforms as platforms
    from connectors.sources import check_secrets
    from connectors.sources.proxy import client_session

    async with client_session() as http:
        probe = platforms.Probe(config.connector, http, time.time)
        for stream in config.streams:
            try:
                check_secrets(stream)
            except ConfigError as err:
                out(Line(False, f"stream {stream.name}", str(err),
                         "set that environment variable where ccstream runs"))
                continue
            for line in probe.proxies(stream):
                out(line)
            if isinstance(stream, StreamConfig):
                lines = await probe.guide(stream)
            elif isinstance(stream, GenesysCloudStream):
                lines = await probe.genesys_cloud(stream)
            else:
                assert isinstance(stream, CxoneStream)
                lines = await probe.cxone(stream)
            for line in lines:
                out(line)

