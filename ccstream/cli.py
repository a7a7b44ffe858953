"""``ccstream``: the one entry point (also ``python -m pipeline``).

Each command is a module of ``ccstream.commands`` with ``configure(parser)`` and
``main(args) -> int``; this file only routes, and turns ccstream's own errors into one line on
stderr and their exit status (2: the set-up is wrong; 1: a fatal condition at run time).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from ccstream.config import ConfigError
from ccstream.errors import CcstreamError

# command -> (module, one-line help); order is the order of `ccstream --help`
COMMANDS: dict[str, str] = {
    "connect": "run the source connector for every stream",
    "dedup": "run the Faust dedup worker (raw -> clean)",
    "run": "connector and dedup worker in one process",
    "simulate": "run the platform simulator with fault injection",
    "demo": "the main job on embedded defaults, with a report",
    "cursors": "show each stream's committed cursor",
    "owners": "cluster mode: slot -> instance -> streams",
    "cluster": "cluster mode: fence every slot's transactional id (slot count changes)",
    "replay": "reprocess raw events from TIME into clean",
    "check": "pre-flight: config, Kafka and topics, credentials, endpoints; writes nothing",
    "kafka": "start, stop or inspect the local Apache Kafka broker",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="ccstream",
        description="Contact-center events from fragile platform sessions into Kafka, "
        "nothing lost, nothing duplicated.",
    )
    subs = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, ModuleType] = {}
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"ccstream.commands.{name}")
        modules[name] = module
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
    try:
        return int(module.main(args))
    except ConfigError as err:
        print(f"ccstream {args.command}: config error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except CcstreamError as err:
        print(f"ccstream {args.command}: {err}", file=sys.stderr)
        return err.exit_status
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
