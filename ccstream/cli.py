"""``ccstream``: the one entry point (also ``python -m pipeline``).

Each command is a module with ``configure(parser)`` and ``main(args) -> int``; this file only
routes. A command whose module is not written yet is listed, says so plainly when run, and exits
non-zero rather than pretending.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ccstream.config import ConfigError

# command -> (module, one-line help); order is the order of `ccstream --help`
COMMANDS: dict[str, tuple[str, str]] = {
    "connect": ("ccstream.commands.connect", "run the source connector for every stream"),
    "dedup": ("ccstream.commands.dedup", "run the Faust dedup worker (raw -> clean)"),
    "run": ("ccstream.commands.run", "connector and dedup worker in one process"),
    "simulate": ("ccstream.commands.simulate", "run the platform simulator with fault injection"),
    "demo": ("ccstream.commands.demo", "the main job on embedded defaults, with a report"),
    "cursors": ("ccstream.commands.cursors", "show each stream's committed cursor"),
    "replay": ("ccstream.commands.replay", "reprocess raw events from TIME into clean"),
    "kafka": ("ccstream.commands.kafka", "start, stop or inspect the local Apache Kafka broker"),
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _load(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name and module.startswith(err.name):
            return None  # the command's own module does not exist yet
        raise


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType | None]]:
    parser = argparse.ArgumentParser(
        prog="ccstream",
        description="Contact-center events from WebSocket sessions into Kafka, "
        "nothing lost, nothing duplicated.",
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType | None] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load(module_name)
        modules[name] = module
        if module is None:
            subs.add_parser(name, help=f"{help_text} (not implemented yet)")
            continue
        sub = subs.add_parser(name, help=help_text, description=module.__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(sub)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    module = modules[args.command]
    if module is None:
        print(f"ccstream {args.command}: not implemented yet", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(module.main(args))
    except ConfigError as err:
        print(f"ccstream {args.command}: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        line = known_failure(err)
        if line is None:
            raise  # a defect: keep the traceback
        print(f"ccstream {args.command}: {line}", file=sys.stderr)
        return EXIT_FAILURE


def known_failure(err: BaseException) -> str | None:
    """One line for failures of the environment (not of ccstream) at start-up, naming the key."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

    if isinstance(err, KafkaConnectionError | KafkaTimeoutError):
        return f"kafka.bootstrap_servers: cannot reach Kafka ({err})"
    return None


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
