"""Cluster mode's operator actions on the group as a whole.

``ccstream cluster fence --config FILE [--slots N] [--force]`` fences the transactional id of
every slot 0..N-1 of the group (default N: the slot topic's partition count now): each id's open
transaction is aborted and whoever held it can commit nothing more. Run it when changing the
slot count (docs/cluster.md, "Changing the slot count"): stop every instance, fence the old
count, repartition the slot topic, start the instances. A process of the old count that was
forgotten (paused, cut off from Kafka) then cannot write a cursor over the new owners' ones.

It refuses while the group has members (fencing a running slot stops it and its instance takes
it again, a needless hand-over of every stream), unless ``--force``. One line per slot; exit 1
when a slot could not be fenced.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ccstream.config import Config, load


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fence = actions.add_parser(
        "fence", help="fence every slot's transactional id (before a slot count change)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fence.add_argument("--config", required=True, metavar="FILE",
                       help="the TOML configuration (docs/cluster.md)")
    fence.add_argument("--slots", type=int, metavar="N",
                       help="fence slots 0..N-1 (default: the slot topic's partition count)")
    fence.add_argument("--force", action="store_true",
                       help="fence even while instances are members of the group")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    lines, status = asyncio.run(fence(config, args.slots, force=args.force))
    for line in lines:
        print(line, file=sys.stderr if status and line.startswith("ccstream") else sys.stdout)
    return status


async def fence(config: Config, slots: int | None, *, force: bool = False
                ) -> tuple[list[str], int]:
    from ccstream.topics import partition_count
    from connectors.cluster.fence import fence_slots
    from connectors.cluster.group import describe_once

    bootstrap, group = config.kafka.bootstrap_servers, config.cluster.group_id
    if slots is None:
        slots = await partition_count(bootstrap, config.topics.slots)
        if slots == 0:
            return [f"ccstream cluster fence: topics.slots: the slot topic {config.topics.slots} "
                    f"does not exist: say how many slots to fence with --slots N"], 1
    if slots < 1:
        return ["ccstream cluster fence: --slots must be at least 1"], 2
    view = await describe_once(bootstrap, group, config.topics.slots)
    if view.members and not force:
        names = ", ".join(sorted(m.instance for m in view.members))
        return [f"ccstream cluster fence: group {group} has {len(view.members)} member(s) "
                f"({names}): stop them first, or --force"], 1
    results = await fence_slots(config, range(slots))
    lines = [f"slot {r.slot}\t{r.transactional_id}\t{'fenced' if r.ok else r.error}"
             for r in results]
    failed = [r for r in results if not r.ok]
    lines.append(f"group {group}: {len(results) - len(failed)} of {len(results)} slots fenced")
    if failed:
        lines.append(f"ccstream cluster fence: {len(failed)} slot(s) not fenced "
                     f"({', '.join(str(r.slot) for r in failed)}): run it again")
    return lines, 1 if failed else 0
