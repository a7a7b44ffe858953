"""Faults carried out: arm them, fire the armed socket and channel faults on their targets.

The board (``board.GcFaultBoard``) says what is armed; the channel board says which socket or
channel is the target; this module changes their state and hands actions to the simulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulator.genesys_cloud import frames
from simulator.genesys_cloud.channels import Channel, Sock
from simulator.genesys_cloud.faults import CHANNEL_KINDS, FRAME_VARIANTS, SOCKET_KINDS, GcFault
from simulator.genesys_cloud.frames import MALFORMED
from simulator.genesys_cloud.model import new_uuid
from simulator.genesys_cloud.streaming import Out, SocketDriver

if TYPE_CHECKING:
    from simulator.genesys_cloud.server import GenesysCloudSimulator


def _clients(sim: GenesysCloudSimulator, fault: GcFault) -> list[str]:
    return [c for c in sorted(sim.clients) if fault.matches(c)]


def arm(sim: GenesysCloudSimulator, fault: GcFault, now: float) -> None:
    """Carry out a fault that acts at once, arm the others (and fire them if a target is ready)."""
    if fault.kind == "analytics" and fault.variant == "lag":
        assert fault.lag_s is not None
        until = now + fault.duration_s if fault.duration_s is not None else float("inf")
        for client_id in _clients(sim, fault):
            sim.analytics.set_lag(client_id, fault.lag_s, until)
            sim.stats_of(client_id).faults[fault.kind] += 1
        return
    sim.faults.arm(fault)
    if fault.kind == "deny_topics":
        for client_id in _clients(sim, fault):
            sim.stats_of(client_id).faults[fault.kind] += 1
    elif fault.kind in SOCKET_KINDS or fault.kind in CHANNEL_KINDS:
        fire_armed(sim, now)


def fire_armed(sim: GenesysCloudSimulator, now: float) -> None:
    for armed in sim.faults.socket_faults():
        fault = armed.fault
        for client_id in _clients(sim, fault):
            sock = sim.board.current(client_id, fault.socket)
            if (sock is not None and sock.id in sim.drivers
                    and sock.notifications >= fault.after_notifications):
                fire_socket(sim, fault, sock, now)
                sim.faults.consume(armed)
                break
    for armed in sim.faults.channel_faults():
        fault = armed.fault
        for channel in _target_channels(sim, fault):
            fire_channel(sim, fault, channel, now)
            sim.faults.consume(armed)
            break


def _target_channels(sim: GenesysCloudSimulator, fault: GcFault) -> list[Channel]:
    if fault.channel is not None:
        channel = sim.board.channels.get(fault.channel)
        ok = channel is not None and channel.gone is None and fault.matches(channel.client_id)
        return [channel] if ok and channel is not None else []
    found = (sim.board.channel_with_socket(c, None) for c in _clients(sim, fault))
    return [c for c in found if c is not None]


def fire_socket(sim: GenesysCloudSimulator, fault: GcFault, sock: Sock, now: float) -> None:
    stats = sim.stats_of(sock.client_id)
    stats.faults[fault.kind] += 1
    driver = sim.drivers[sock.id]
    board, kind = sim.board, fault.kind
    sim.log.info("sim.fault_fired", client=sock.client_id, socket=sock.number,
                 fault=fault.to_dict())
    if kind == "silent":
        hold = fault.duration_s if fault.duration_s is not None else sim.settings.silent_hold_s
        board.silence(sock, now, hold)
        sim.touch(sock.client_id, now)
    elif kind == "pong_delay":
        sock.pong_delay_s = fault.delay_s or 0.0
        sock.pong_delay_left = fault.count
    elif kind == "pong_drop":
        sock.pong_drop_left = fault.count
    elif kind == "frames":
        _frames(sim, driver, fault)
    elif kind == "closing_notice":
        delay = fault.delay_s
        if delay is None:
            delay = sim.settings.scaled(sim.settings.notice_s)
        stats.closing_notices_sent += 1
        org = sim.orgs[sock.client_id]
        driver.put(Out("frame", frames.closing_notice(sock.channel_id, new_uuid(sim.rng),
                                                       org.org_id, sock.client_id)))
        board.notice(sock, now, delay)
    elif kind == "idle_close":
        sim.execute(board.close(sock, 1001, "idle"), now)
    elif kind == "reset":
        sim.execute(board.abort(sock, "reset"), now)


def _frames(sim: GenesysCloudSimulator, driver: SocketDriver, fault: GcFault) -> None:
    assert driver.sock is not None
    stats = sim.stats_of(driver.sock.client_id)
    for variant in (fault.variant,) if fault.variant else FRAME_VARIANTS:
        stats.frames_sent[variant] += fault.count
        if variant == "extra_fields":
            driver.extra_left += fault.count
        elif variant == "reorder":
            driver.reorder_left += fault.count + 1
        elif variant == "resend":
            last = driver.last_notification
            for _ in range(fault.count if last is not None else 0):
                assert last is not None
                stats.duplicates_sent += 1
                driver.put(Out("frame", last[1], topic=last[0]))
        elif variant == "unknown_topic":
            for n in range(fault.count):
                driver.put(Out("frame", frames.unknown_topic(new_uuid(sim.rng), n)))
        elif variant in MALFORMED:
            data, binary = frames.malformed(variant)
            for _ in range(fault.count):
                driver.put(Out("frame", data, binary=binary))


def fire_channel(sim: GenesysCloudSimulator, fault: GcFault, channel: Channel,
                 now: float) -> None:
    stats = sim.stats_of(channel.client_id)
    stats.faults[fault.kind] += 1
    sim.log.info("sim.fault_fired", client=channel.client_id, channel=channel.id,
                 fault=fault.to_dict())
    if fault.kind == "channel_gone":
        stats.channels_gone_fault += 1
        actions = sim.board.make_gone(channel, fault.variant or "expired", now)
    else:
        stats.channels_replaced += 1
        actions = sim.board.take_foreign(channel, now)
    for action in actions:
        sim.execute(action, now)
    sim.touch(channel.client_id, now)
