"""Serve simulated Genesys Cloud CX and NICE CXone platforms on loopback, faults on demand.

One port serves the OAuth2 token endpoint (POST /oauth/token), the Genesys-flavour stream
(GET /api/v2/analytics/events, resume with since=), the NICE-flavour stream
(GET /api/v2/ws/events, resume with cursor=), and the simulator's own endpoints: GET /_sim/stats
(per-client counters), GET /_sim/ledger (every distinct event emitted), POST /_sim/faults (inject a
JSON list of faults while running). It prints its URLs and a ready-to-paste [[streams]] snippet,
then runs until SIGINT/SIGTERM (or --duration). Every client id is a tenant with its own streams.
Durations of the platform (token lifetimes, ping windows, heartbeats, retention age) are divided
by --time-scale; fault times and durations are real seconds.

--platform picks the flavour: `guide` (default: the integration guide's Genesys and NICE streams
above), `genesys-cloud` (the Genesys Cloud Notifications API: channels, subscriptions, sockets
with no replay, the analytics queries; docs/genesys-cloud.md) or `cxone` (NICE CXone real-time
data: discovery, access-key tokens, polling with a server watermark, completed contacts;
docs/cxone.md). The --gc-* and --cxone-* options are those flavours';
--host, --port, --client, --seed, --rate, --time-scale, --faults, --fault and --duration mean the
same in every flavour.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import secrets
import sys
from pathlib import Path
from typing import Any, NoReturn

from simulator import cli as sim_cli
from simulator.cli import count, non_negative, positive
from simulator.faults import (
    PRESETS,
    Fault,
    FaultScriptError,
    describe,
    parse_inline,
    parse_script,
)
from simulator.settings import PLATFORMS, ClientSpec, Platform, SimSettings

EXIT_USAGE = 2
# --platform: the module serving each flavour (None: this module, the guide's two streams)
FLAVOURS: dict[str, str | None] = {
    "guide": None,
    "genesys-cloud": "simulator.genesys_cloud.command",
    "cxone": "simulator.cxone.command",
}


def load_script(path: str | Path) -> list[Fault]:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise FaultScriptError(str(file), f"cannot read: {err.strerror}") from None
    return parse_script(text, str(file))


def _client(text: str) -> ClientSpec:
    """``ID:SECRET[:genesys,nice]``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"expected ID:SECRET[:genesys,nice], not {text!r}")
    platforms: tuple[Platform, ...] = PLATFORMS
    if len(parts) == 3:
        chosen = [p for p in PLATFORMS if p in parts[2].split(",")]
        if not chosen or len(chosen) != len(parts[2].split(",")):
            raise argparse.ArgumentTypeError(f"platforms are genesys and/or nice, not {parts[2]!r}")
        platforms = tuple(chosen)
    return ClientSpec(parts[0], parts[1], platforms)


def _one_line_error(prog: str) -> Any:
    def error(message: str) -> NoReturn:
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    return error


def configure(parser: argparse.ArgumentParser) -> None:
    # bad options answer one clear line (argparse would add the whole usage block)
    setattr(parser, "error", _one_line_error("ccstream simulate"))  # noqa: B010
    parser.epilog = describe()
    defaults = SimSettings()
    add = parser.add_argument
    add("--platform", choices=tuple(FLAVOURS), default="guide",
        help="which platform to serve (default %(default)s: the guide's Genesys and NICE streams)")
    add("--host", default=defaults.host, help="address to bind (default %(default)s)")
    add("--port", type=int, default=8780, help="port, 0 = any free one (default %(default)s)")
    add("--client", type=_client, action="append", default=[], metavar="ID:SECRET[:PLATFORMS]",
        help="an OAuth client (tenant); repeatable; default: one 'demo' client with a random "
        "secret on both platforms")
    add("--seed", type=int, default=defaults.seed, help="seed of events and faults")
    add("--rate", type=non_negative, default=defaults.rate,
        help="events/s per stream (default %(default)s)")
    add("--types", default="", help="comma-separated event types (default: the platform's)")
    add("--correlation-ids", type=count, default=defaults.correlation_ids,
        help="live interactions per stream (default %(default)s)")
    add("--retention-events", type=count, default=defaults.retention_events,
        help="retained events per stream (default %(default)s)")
    add("--retention-s", type=positive, default=defaults.retention_s,
        help="retention age, platform seconds (default %(default)s)")
    add("--duplicate-rate", type=non_negative, default=defaults.duplicate_rate,
        help="share of live events sent twice (default %(default)s)")
    add("--token-lifetime", type=positive, default=None,
        help="access token lifetime, platform seconds (default: Genesys 7200, NICE 3600)")
    add("--clock-skew", type=float, default=0.0,
        help="seconds added to the simulator's clock (exp, iat, timestamps)")
    add("--time-scale", type=positive, default=1.0,
        help="divide every platform duration by this (3600: an hour lasts a second)")
    add("--max-connections", type=count, default=defaults.max_connections,
        help="open connections per client id (default %(default)s)")
    add("--limit-answer", choices=("429", "1013"), default=defaults.limit_answer,
        help="answer beyond the limit (default %(default)s)")
    add("--ping-window", type=positive, default=None,
        help="drop a client silent for this long, platform s (default: Genesys 15, NICE 30)")
    add("--heartbeat", type=positive, default=defaults.heartbeat_s,
        help="heartbeat interval, platform seconds (default %(default)s)")
    add("--faults", metavar="PRESET|FILE", default=None,
        help=f"a preset ({', '.join(PRESETS)}) or a fault script (.toml with [[fault]] tables, "
        ".json with a list)")
    add("--fault", action="append", default=[], metavar="kind=K,key=value,...",
        help="one fault, inline; repeatable (see below)")
    add("--preset-interval", type=positive, default=defaults.preset_interval_s,
        help="mean seconds between preset faults (default %(default)s)")
    add("--duration", type=positive, default=None, help="stop after this many seconds")
    for module in FLAVOURS.values():
        if module is not None:
            importlib.import_module(module).add_arguments(parser)


def _faults(args: argparse.Namespace) -> tuple[str | None, list[Fault]]:
    preset = None
    faults: list[Fault] = []
    if args.faults:
        if args.faults in PRESETS:
            preset = args.faults
        elif Path(args.faults).suffix in (".toml", ".json") or Path(args.faults).exists():
            faults.extend(load_script(args.faults))
        else:
            known = ", ".join(PRESETS)
            raise FaultScriptError("--faults", f"{args.faults!r} is neither a preset ({known}) "
                                   "nor a fault script file")
    for index, text in enumerate(args.fault):
        try:
            faults.append(parse_inline(text))
        except FaultScriptError as err:
            raise FaultScriptError(f"--fault #{index + 1}: {err.where}", err.problem) from None
    return preset, faults


def settings_from(args: argparse.Namespace, preset: str | None) -> SimSettings:
    clients = tuple(args.client) or (ClientSpec("demo", secrets.token_urlsafe(12)),)
    types = tuple(t for t in args.types.split(",") if t) or None
    return SimSettings(
        clients=clients, host=args.host, port=args.port, seed=args.seed, rate=args.rate,
        types=types, correlation_ids=args.correlation_ids,
        retention_events=args.retention_events, retention_s=args.retention_s,
        duplicate_rate=min(args.duplicate_rate, 1.0), token_lifetime_s=args.token_lifetime,
        clock_skew_s=args.clock_skew, time_scale=args.time_scale,
        max_connections=args.max_connections, limit_answer=args.limit_answer,
        ping_window_s=args.ping_window, heartbeat_s=args.heartbeat, preset=preset,
        preset_interval_s=args.preset_interval,
    )


def snippet(sim: Any) -> str:
    """URLs and a ready-to-paste ``[[streams]]`` block per client and platform."""
    lines = [
        f"# ccstream simulate on {sim.base_url} (seed {sim.settings.seed}, "
        f"preset {sim.settings.preset or 'none'})",
        f"# token:   {sim.token_url}",
        f"# genesys: {sim.stream_url('genesys')}",
        f"# nice:    {sim.stream_url('nice')}",
        f"# stats:   {sim.base_url}/_sim/stats    ledger: {sim.base_url}/_sim/ledger",
        f"# faults:  POST {sim.base_url}/_sim/faults  (a JSON list of faults)",
    ]
    for spec in sim.clients.values():
        for platform in spec.platforms:
            lines += ["", "[[streams]]", f'name = "{platform}-{spec.client_id}"',
                      f'platform = "{platform}"', f'url = "{sim.stream_url(platform)}"',
                      f'token_url = "{sim.token_url}"', f'client_id = "{spec.client_id}"',
                      f'client_secret = "{spec.secret}"  # a simulator credential']
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ccstream.logs import configure as configure_logs

    flavour = FLAVOURS[args.platform]
    if flavour is not None:
        return int(importlib.import_module(flavour).main(args))
    try:
        preset, faults = _faults(args)
        settings = settings_from(args, preset)
    except (FaultScriptError, ValueError) as err:
        print(f"ccstream simulate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    configure_logs("INFO", "console")
    return asyncio.run(_serve_flavour(settings, faults, args.duration))


async def _serve_flavour(settings: Any, faults: Any, duration: float | None) -> int:
    from simulator.server import Simulator

    return await sim_cli.serve(Simulator(settings, faults), snippet, duration)
