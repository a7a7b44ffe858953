"""``ccstream simulate --platform cxone``: this flavour's options and its serving loop.

The generic options (``--host``, ``--port``, ``--seed``, ``--rate``, ``--duration``,
``--time-scale``, ``--fault``, ``--faults``, ``--client``, ``--platform``) belong to the
``simulate`` command and arrive in ``args``; ``--client ID:SECRET`` is an access key id and
secret here (one tenant each). Everything specific to CXone is ``--cxone-*``.
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
from simulator.cli import count, positive
from simulator.cxone.faults import (
    PRESETS,
    CxFault,
    CxFaultError,
    describe,
    parse_inline,
    parse_script,
)
from simulator.cxone.settings import CxSettings, CxTenant

EXIT_USAGE = 2
_DEFAULTS = CxSettings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--cxone-*`` options (defaults: ``CxSettings``)."""
    d = _DEFAULTS
    add = parser.add_argument_group("cxone (--platform cxone)").add_argument
    add("--cxone-tenant", default="demo",
        help="tenant id of the first access key (later ones get 2, 3, ...; default %(default)s)")
    add("--cxone-app-id", default="ccstream", help="the app's client_id (default %(default)s)")
    add("--cxone-app-secret", default=None, help="the app's client_secret (default: random)")
    add("--cxone-agents", type=count, default=8, help="agents per tenant (default %(default)s)")
    add("--cxone-skills", type=count, default=3, help="skills per tenant (default %(default)s)")
    add("--cxone-api-version", default=d.api_version,
        help="version printed in the URLs; any vN.N is served (default %(default)s)")
    add("--cxone-area", default=d.area, help="first area (default %(default)s)")
    add("--cxone-domain", default=d.domain, help="domain answered (default %(default)s)")
    add("--cxone-token-lifetime", type=positive, default=d.token_lifetime_s,
        help="expires_in and exp - iat, platform seconds (default %(default)s)")
    add("--cxone-retention", type=positive, default=d.retention_s,
        help="updatedSince retention, platform seconds (default %(default)s)")
    add("--cxone-completion-lag", type=float, default=d.completion_lag_s,
        help="longest delay before a completed contact is listed, platform seconds; keep it "
        "<= settle_s/2 (default %(default)s)")
    add("--cxone-clock-skew", type=float, default=d.clock_skew_s,
        help="seconds added to the server clock on the wire (default %(default)s)")
    add("--cxone-stall", type=positive, default=d.stall_s,
        help="real seconds a stall fault holds an answer (default %(default)s)")
    add("--cxone-max-top", type=count, default=d.max_top,
        help="largest contacts/completed page (default %(default)s)")
    add("--cxone-preset-interval", type=positive, default=d.preset_interval_s,
        help="mean real seconds between preset faults (default %(default)s)")
    parser.epilog = f"{parser.epilog}\n\n{describe()}" if parser.epilog else describe()


def _clients(args: argparse.Namespace) -> list[tuple[str, str]]:
    """``--client`` values: ``ID:SECRET`` strings, or objects with client_id/secret."""
    out = []
    for item in getattr(args, "client", None) or []:
        if isinstance(item, str):
            key, sep, secret = item.partition(":")
            if not sep or not key or not secret:
                raise ValueError(f"--client: expected ACCESS_KEY_ID:SECRET, not {item!r}")
            out.append((key, secret.split(":")[0]))
        else:
            out.append((str(item.client_id), str(item.secret)))
    return out or [("demo-key", secrets.token_urlsafe(12))]


def _faults(args: argparse.Namespace) -> tuple[str | None, list[CxFault]]:
    preset, faults = None, []
    source = getattr(args, "faults", None)
    if source:
        path = Path(source)
        if source in PRESETS:
            preset = source
        elif path.suffix in (".toml", ".json") or path.exists():
            try:
                text = path.read_text()
            except OSError as err:
                raise CxFaultError(source, f"cannot read: {err.strerror}") from None
            faults.extend(parse_script(text, source))
        else:
            raise CxFaultError("--faults", f"{source!r} is neither a cxone preset "
                               f"({', '.join(PRESETS)}) nor a fault script file")
    for index, text in enumerate(getattr(args, "fault", None) or []):
        try:
            faults.append(parse_inline(text))
        except CxFaultError as err:
            raise CxFaultError(f"--fault #{index + 1}: {err.where}", err.problem) from None
    return preset, faults


def settings_from(args: argparse.Namespace, preset: str | None) -> CxSettings:
    app_secret = args.cxone_app_secret or secrets.token_urlsafe(12)
    tenants = tuple(
        CxTenant(args.cxone_tenant if n == 0 else f"{args.cxone_tenant}{n + 1}",
                 access_key_id=key, access_key_secret=secret, client_id=args.cxone_app_id,
                 client_secret=app_secret, agents=args.cxone_agents, skills=args.cxone_skills)
        for n, (key, secret) in enumerate(_clients(args)))
    seed, rate = getattr(args, "seed", 0), getattr(args, "rate", None)
    return CxSettings(
        tenants=tenants, host=getattr(args, "host", _DEFAULTS.host),
        port=getattr(args, "port", 0), seed=seed if seed is not None else 0,
        rate=_DEFAULTS.rate if rate is None else rate, area=args.cxone_area,
        domain=args.cxone_domain, api_version=args.cxone_api_version,
        token_lifetime_s=args.cxone_token_lifetime, retention_s=args.cxone_retention,
        completion_lag_s=args.cxone_completion_lag, clock_skew_s=args.cxone_clock_skew,
        max_top=args.cxone_max_top, preset=preset, preset_interval_s=args.cxone_preset_interval,
        stall_s=args.cxone_stall, time_scale=getattr(args, "time_scale", None) or 1.0)


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


def snippet(sim: Any) -> str:
    """URLs and a ready-to-paste ``[[streams]]`` block per access key (contract s.1)."""
    base, version = sim.base_url, sim.settings.api_version
    lines = [
        f"# ccstream simulate --platform cxone on {base} (seed {sim.settings.seed}, "
        f"preset {sim.settings.preset or 'none'}, time scale {sim.settings.time_scale})",
        f"# discovery: {base}/.well-known/openid-configuration",
        f"# token:     {sim.token_url}",
        f"# api:       {base}/incontactapi/services/{version}/"
        "{agents/states|contacts/active|skills/activity|contacts/completed}",
        f"# stats:     {base}/_sim/stats    ledger: {base}/_sim/ledger",
        f"# faults:    POST {base}/_sim/faults  (a JSON list of faults)",
    ]
    for tenant in sim.tenants.values():
        key_env = f"CXONE_{_env_name(tenant.access_key_id)}_SECRET"
        app_env = f"CXONE_{_env_name(tenant.client_id)}_APP_SECRET"
        lines += [f"# export {key_env}='{tenant.access_key_secret}' "
                  f"{app_env}='{tenant.client_secret}'  # simulator credentials"]
    for tenant in sim.tenants.values():
        lines += ["", "[[streams]]", f'name = "cxone-{tenant.name}"', 'platform = "cxone"',
                  f'discovery_url = "{base}"', f'access_key_id = "{tenant.access_key_id}"',
                  f'access_key_secret_env = "CXONE_{_env_name(tenant.access_key_id)}_SECRET"',
                  f'client_id = "{tenant.client_id}"',
                  f'client_secret_env = "CXONE_{_env_name(tenant.client_id)}_APP_SECRET"']
        if version != "v32.0":
            lines.append(f'api_version = "{version}"')
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM or ``--duration``; 2 with one line for a bad option."""
    from ccstream.logs import configure as configure_logs

    try:
        preset, faults = _faults(args)
        settings = settings_from(args, preset)
    except (CxFaultError, ValueError) as err:
        print(f"ccstream simulate: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    configure_logs("INFO", "console")
    return asyncio.run(_serve_flavour(settings, faults, getattr(args, "duration", None)))


async def _serve_flavour(settings: Any, faults: Any, duration: float | None) -> int:
    from simulator.cxone.server import CxoneSimulator

    return await sim_cli.serve(CxoneSimulator(settings, faults), snippet, duration)
