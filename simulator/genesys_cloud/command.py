"""``ccstream simulate --platform genesys-cloud``: this flavour's options and its main.

The generic options (``--host``, ``--port``, ``--seed``, ``--rate``, ``--duration``,
``--time-scale``, ``--fault``, ``--faults``, ``--client``, ``--platform``) belong to the
``simulate`` command and arrive in ``args``; ``add_arguments`` adds only this flavour's, each
prefixed ``--gc-``. ``main`` serves until SIGINT/SIGTERM or ``--duration``, printing its URLs and
a ready-to-paste ``[[streams]]`` block per OAuth client.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys
from pathlib import Path
from typing import Any

from simulator import cli as sim_cli
from simulator.cli import positive, whole
from simulator.genesys_cloud.faults import (
    PRESETS,
    GcFault,
    GcFaultError,
    describe,
    parse_inline,
    parse_script,
)
from simulator.genesys_cloud.settings import GcClient, GcSettings

EXIT_USAGE = 2
TOPICS = ("v2.routing.queues.{queue}.conversations", "v2.users.{user}?presence&routingStatus",
          "v2.users.{user}.conversations")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This flavour's options (all ``--gc-``); defaults are ``GcSettings``'s."""
    d = GcSettings()
    c = GcClient("x", "x")
    group = parser.add_argument_group(
        "genesys-cloud", "options of --platform genesys-cloud (faults and presets: see below)")
    parser.epilog = f"{parser.epilog}\n\n{describe()}" if parser.epilog else describe()
    add = group.add_argument
    add("--gc-queues", type=whole, default=c.queues, help="routing queues per org (default "
        "%(default)s)")
    add("--gc-users", type=whole, default=c.users, help="users per org (default %(default)s)")
    add("--gc-token-lifetime", type=positive, default=d.token_lifetime_s,
        help="expires_in, platform s (default %(default)s)")
    add("--gc-channel-ttl", type=positive, default=d.channel_ttl_s,
        help="channel TTL without a subscription call, platform s (default %(default)s)")
    add("--gc-heartbeat", type=positive, default=d.heartbeat_s,
        help="socket heartbeat, platform s (default %(default)s)")
    add("--gc-notice", type=positive, default=d.notice_s,
        help="closing notice -> 1001, platform s (default %(default)s)")
    add("--gc-rate-limit", type=int, default=d.rate_limit,
        help="REST calls per token per window (default %(default)s)")
    add("--gc-rate-window", type=positive, default=d.rate_window_s,
        help="the rate window, platform s (default %(default)s)")
    add("--gc-replace-grace", type=float, default=d.replace_grace_s,
        help="real s before a replaced socket gets 4000 (default %(default)s; the judge: 10)")
    add("--gc-analytics-lag", type=float, default=d.analytics_lag_s,
        help="analytics data lag L, real s (default %(default)s; keep <= settle_s / 2)")
    add("--gc-preset-interval", type=positive, default=d.preset_interval_s,
        help="mean real s between preset faults (default %(default)s)")


def _clients(args: argparse.Namespace) -> tuple[GcClient, ...]:
    out = []
    for item in getattr(args, "client", None) or ():
        if isinstance(item, str):
            client_id, sep, secret = item.partition(":")
            secret = secret.split(":")[0]
            if not sep or not client_id or not secret:
                raise GcFaultError("--client", f"expected ID:SECRET, not {item!r}")
        else:
            client_id, secret = item.client_id, item.secret
        out.append(GcClient(client_id, secret, args.gc_queues, args.gc_users))
    return tuple(out) or (GcClient("demo", secrets.token_urlsafe(12), args.gc_queues,
                                   args.gc_users),)


def _faults(args: argparse.Namespace) -> tuple[str | None, list[GcFault]]:
    preset, faults = None, []
    source = getattr(args, "faults", None)
    if source:
        if source in PRESETS:
            preset = source
        elif Path(source).exists():
            faults.extend(parse_script(Path(source).read_text(), source))
        else:
            raise GcFaultError("--faults", f"{source!r} is neither a preset "
                               f"({', '.join(PRESETS)}) nor a fault script file")
    for index, text in enumerate(getattr(args, "fault", None) or ()):
        try:
            faults.append(parse_inline(text))
        except GcFaultError as err:
            raise GcFaultError(f"--fault #{index + 1}: {err.where}", err.problem) from None
    return preset, faults


def settings_from(args: argparse.Namespace, preset: str | None) -> GcSettings:
    return GcSettings(
        clients=_clients(args), host=getattr(args, "host", "127.0.0.1"),
        port=getattr(args, "port", 0), seed=getattr(args, "seed", 0),
        rate=getattr(args, "rate", 20.0), time_scale=getattr(args, "time_scale", 1.0) or 1.0,
        token_lifetime_s=args.gc_token_lifetime, channel_ttl_s=args.gc_channel_ttl,
        heartbeat_s=args.gc_heartbeat, notice_s=args.gc_notice, rate_limit=args.gc_rate_limit,
        rate_window_s=args.gc_rate_window, replace_grace_s=args.gc_replace_grace,
        analytics_lag_s=args.gc_analytics_lag, preset=preset,
        preset_interval_s=args.gc_preset_interval)


def _env_name(client_id: str) -> str:
    return "CCSTREAM_GC_" + re.sub(r"[^A-Z0-9]+", "_", client_id.upper()).strip("_") + "_SECRET"


def snippet(sim: Any) -> str:
    """URLs and a ready-to-paste ``[[streams]]`` block per OAuth client (contract s.1)."""
    base = sim.base_url
    lines = [
        f"# ccstream simulate --platform genesys-cloud on {base} (seed {sim.settings.seed}, "
        f"preset {sim.settings.preset or 'none'})",
        f"# login + api: {base}   streaming: ws://{base.split('://', 1)[1]}/channels/{{id}}",
        f"# stats: {base}/_sim/stats   ledger: {base}/_sim/ledger   faults: POST "
        f"{base}/_sim/faults",
    ]
    topics = ", ".join(f'"{t}"' for t in TOPICS)
    for spec in sim.clients.values():
        env = _env_name(spec.client_id)
        lines += ["", f"# export {env}='{spec.secret}'   (a simulator credential)",
                  "[[streams]]", f'name = "gc-{spec.client_id}"', 'platform = "genesys-cloud"',
                  f'api_url = "{base}"', f'client_id = "{spec.client_id}"',
                  f'client_secret_env = "{env}"', f"topics = [{topics}]"]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ccstream.logs import configure as configure_logs

    try:
        preset, faults = _faults(args)
        settings = settings_from(args, preset)
    except (GcFaultError, ValueError, OSError) as err:
        print(f"ccstream simulate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    configure_logs("INFO", "console")
    return asyncio.run(_serve_flavour(settings, faults, getattr(args, "duration", None)))


async def _serve_flavour(settings: Any, faults: Any, duration: float | None) -> int:
    from simulator.genesys_cloud.server import GenesysCloudSimulator

    return await sim_cli.serve(GenesysCloudSimulator(settings, faults), snippet, duration)
