"""Cluster mode: which instance owns which slot, and the streams of each slot, from the group.

One line per slot of the slot topic: the slot, the instance running it (its client id in the
group, ``-`` when no member has it), and the configured streams that hash to it. A first line
says the group's state and members; a member whose configuration differs from this file's
(another fingerprint) is marked. Reads the group as the coordinator describes it; writes nothing.
Exit 1 with one line when the slot topic does not exist.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ccstream.config import Config, load


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the TOML configuration (docs/cluster.md)")


def main(args: argparse.Namespace) -> int:
    config = load(args.config)
    lines = asyncio.run(owners(config))
    if lines is None:
        print(f"ccstream owners: topics.slots: the slot topic {config.topics.slots} does not "
              f"exist (has a cluster-mode instance run?)", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


async def owners(config: Config) -> list[str] | None:
    from ccstream.topics import partition_count
    from connectors.cluster.group import describe_once
    from connectors.policy.slots import fingerprint, slot_of

    bootstrap, topic = config.kafka.bootstrap_servers, config.topics.slots
    count = await partition_count(bootstrap, topic)
    if count == 0:
        return None
    view = await describe_once(bootstrap, config.cluster.group_id, topic)
    mine = fingerprint(((s.name, s.platform) for s in config.streams), count)
    lines = [f"group {config.cluster.group_id}\tstate={view.state}\tmembers={len(view.members)}"
             f"\tslots={count}"]
    for member in sorted(view.members, key=lambda m: m.instance):
        claim = member.claim
        differs = claim is not None and claim.fingerprint != mine
        lines.append(f"member {member.instance}\thost={member.host}\tslots={len(member.slots)}"
                     + ("\t(another configuration)" if differs else ""))
    for slot in range(count):
        owner = view.owner_of(slot)
        streams = [s.name for s in config.streams if slot_of(s.name, count) == slot]
        lines.append(f"slot {slot}\t{owner.instance if owner else '-'}\t"
                     f"{','.join(streams) or '-'}")
    return lines
