"""Recovery: server-side close -> first event on the new connection, per fault kind, against the
backoff delay the connector chose; and silent-drop detection against ping interval + pong timeout.

Set-up: one Apache Kafka broker; the simulator and ``connectors.runner.Runner`` in this process
on one loop (loopback; 200 events/s on one Genesys stream, no duplicates), default connector
settings except the stream's ping interval (``--ping-interval``, 2 s instead of Genesys' 12 s, so
that a silent drop is detected within seconds; the pong timeout is the default 2 s).

Measured from the connector's own structured logs (a handler on ``ccstream.connector``) and a
probe on its Kafka sink (``send_event`` is wrapped to note when an event is handed over):

* ``t_close``: the ``ws.closed`` record (the close frame or the reset seen by the connector;
  for ``closing_notice`` the ``ws.closing_notice`` record, for ``silent`` the ``ws.pong_timeout``);
* ``delay``: ``delay_s`` of the ``ws.reconnect_scheduled`` record that follows (the backoff, or
  the 1013 ``retry_after`` floor);
* ``t_first``: the first event handed to the sink after the next ``ws.connected``.

Overhead = (t_first - t_close) - delay: token refresh (auth closes), handshake, replay start.
Target <= 50 ms on loopback. Silent drop: detection = ``ws.pong_timeout`` - the last event
received before it (the simulator falls silent right after an event), bound = ping interval +
pong timeout.

    .venv/bin/python bench/bench_recovery.py [--repeat 3] [--ping-interval 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _harness as h

from ccstream.logs import fields_of

CLIENT, SECRET, SECRET_ENV = "acme", "bench-recovery-secret", "CCSTREAM_BENCH_RECOVERY_SECRET"

# (label, fault fields); every fault fires on the open connection after a few events
FAULTS: list[tuple[str, dict[str, Any]]] = [
    ("close 1000", {"kind": "close", "code": 1000}),
    ("close 1001", {"kind": "close", "code": 1001}),
    ("close 1011", {"kind": "close", "code": 1011}),
    ("close 1012", {"kind": "close", "code": 1012}),
    ("close 1014", {"kind": "close", "code": 1014}),
    ("close 1013 retry 2s", {"kind": "close", "code": 1013, "retry_after": 2}),
    ("close 1008 (auth)", {"kind": "close", "code": 1008}),
    ("close 1000 token_expired", {"kind": "close", "code": 1000, "reason": "token_expired"}),
    ("tcp reset", {"kind": "reset"}),
    ("closing notice", {"kind": "closing_notice", "delay_s": 5.0}),
]


@dataclass
class Probe:
    """What the connector did, with wall-clock times: its log records and event hand-overs."""

    records: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    events: list[float] = field(default_factory=list)

    def since(self, t: float, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(ts, f) for ts, e, f in self.records if e == event and ts >= t]

    def first_event_after(self, t: float) -> float | None:
        return next((ts for ts in self.events if ts >= t), None)


class _Capture(logging.Handler):
    def __init__(self, probe: Probe) -> None:
        super().__init__(logging.INFO)
        self.probe = probe

    def emit(self, record: logging.LogRecord) -> None:
        self.probe.records.append((record.created, record.getMessage(), fields_of(record)))


@dataclass
class Episode:
    label: str
    recovery_ms: float
    delay_ms: float
    connect_to_event_ms: float
    close_to_scheduled_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.recovery_ms - self.delay_ms


def _config(bootstrap: str, sim: Any, ping_interval: float) -> Any:
    from ccstream.config import parse

    prefix = f"bench.recovery.{int(time.time())}"
    return parse({
        "kafka": {"bootstrap_servers": bootstrap},
        "topics": {"raw": f"{prefix}.raw", "clean": f"{prefix}.clean",
                   "cursors": f"{prefix}.cursors", "dlq": f"{prefix}.dlq"},
        "streams": [{"name": "bench", "platform": "genesys", "url": sim.stream_url("genesys"),
                     "token_url": sim.token_url, "client_id": CLIENT,
                     "client_secret_env": SECRET_ENV, "ping_interval_s": ping_interval}],
    }, environ={})


async def _until(predicate: Any, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def episode(sim: Any, probe: Probe, label: str, fault: dict[str, Any],
                  close_event: str) -> Episode | None:
    from simulator import Fault

    start = time.time()
    sim.inject(Fault(client=CLIENT, after_events=5, **fault))
    if not await _until(lambda: probe.since(start, close_event), 30):
        print(f"  {label}: no {close_event} within 30 s")
        return None
    t_close = probe.since(start, close_event)[0][0]
    if not await _until(lambda: probe.since(t_close, "ws.connected")
                        and probe.first_event_after(probe.since(t_close, "ws.connected")[0][0]),
                        60):
        print(f"  {label}: no event on a new connection within 60 s")
        return None
    t_conn = probe.since(t_close, "ws.connected")[0][0]
    t_first = probe.first_event_after(t_conn)
    assert t_first is not None
    scheduled = probe.since(t_close, "ws.reconnect_scheduled")
    delay = float(scheduled[0][1].get("delay_s", 0.0)) if scheduled else 0.0
    t_sched = scheduled[0][0] if scheduled else t_close
    await asyncio.sleep(0.2)  # let the new connection settle before the next fault
    return Episode(label, (t_first - t_close) * 1000, delay * 1000, (t_first - t_conn) * 1000,
                   (t_sched - t_close) * 1000)


async def silent(sim: Any, probe: Probe) -> tuple[float, float] | None:
    """(detection ms, pong-timeout-to-first-event ms) of one silent drop."""
    from simulator import Fault

    start = time.time()
    sim.inject(Fault(kind="silent", client=CLIENT, after_events=5, duration_s=60.0))
    if not await _until(lambda: probe.since(start, "ws.pong_timeout"), 60):
        print("  silent: no ws.pong_timeout within 60 s")
        return None
    t_dead = probe.since(start, "ws.pong_timeout")[0][0]
    last = max(ts for ts in probe.events if ts <= t_dead)
    await _until(lambda: probe.since(t_dead, "ws.connected")
                 and probe.first_event_after(probe.since(t_dead, "ws.connected")[0][0]), 60)
    await asyncio.sleep(0.2)
    return (t_dead - last) * 1000, 0.0


async def run(args: argparse.Namespace, bootstrap: str) -> tuple[list[Episode], list[float]]:
    from connectors.runner import Runner
    from simulator import ClientSpec, SimSettings, Simulator

    os.environ[SECRET_ENV] = SECRET
    probe = Probe()
    capture = _Capture(probe)
    connector_log = logging.getLogger("ccstream.connector")
    connector_log.setLevel(logging.INFO)
    connector_log.addHandler(capture)
    connector_log.propagate = False
    settings = SimSettings(clients=(ClientSpec(CLIENT, SECRET, platforms=("genesys",)),),
                           seed=3, rate=args.rate, duplicate_rate=0.0)
    async with Simulator(settings) as sim:
        runner = Runner(_config(bootstrap, sim, args.ping_interval))
        original = runner.sink.send_event

        async def probed(*a: Any, **kw: Any) -> Any:
            probe.events.append(time.time())
            return await original(*a, **kw)

        runner.sink.send_event = probed  # type: ignore[method-assign]
        task = asyncio.create_task(runner.run())
        try:
            if not await _until(lambda: len(probe.events) > 50, 60):
                raise RuntimeError("the connector did not start streaming within 60 s")
            episodes: list[Episode] = []
            for label, fault in FAULTS:
                if args.only and args.only not in label:
                    continue
                close_event = "ws.closing_notice" if fault["kind"] == "closing_notice" \
                    else "ws.closed"
                for _ in range(args.repeat):
                    result = await episode(sim, probe, label, fault, close_event)
                    if result is not None:
                        episodes.append(result)
                print(f"  {label}: done", flush=True)
            detections = []
            for _ in range(args.repeat if not args.only else 0):
                found = await silent(sim, probe)
                if found is not None:
                    detections.append(found[0])
            return episodes, detections
        finally:
            runner.request_stop()
            await asyncio.wait_for(task, 30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--ping-interval", type=float, default=2.0)
    parser.add_argument("--only", default="", help="only the fault kinds whose label has this")
    args = parser.parse_args(argv)
    h.print_header("recovery: server-side close -> first event on the new connection")
    with h.workdir("bench-recovery-") as work, h.kafka_broker(work) as bootstrap:
        episodes, detections = asyncio.run(run(args, bootstrap))
    print(f"\n{'fault':26} {'n':>2} {'recovery ms':>11} {'backoff ms':>10} {'overhead ms':>11} "
          f"{'max overhead':>12} {'close->sched':>12} {'connect->event':>14}")
    for label, _ in FAULTS:
        mine = [e for e in episodes if e.label == label]
        if not mine:
            continue
        print(f"{label:26} {len(mine):2d} {statistics.median(e.recovery_ms for e in mine):11.1f} "
              f"{statistics.median(e.delay_ms for e in mine):10.1f} "
              f"{statistics.median(e.overhead_ms for e in mine):11.1f} "
              f"{max(e.overhead_ms for e in mine):12.1f} "
              f"{statistics.median(e.close_to_scheduled_ms for e in mine):12.1f} "
              f"{statistics.median(e.connect_to_event_ms for e in mine):14.1f}")
    worst = max((e.overhead_ms for e in episodes), default=float("nan"))
    print(f"worst overhead {worst:.1f} ms (target <= 50 ms): "
          f"{'met' if worst <= 50 else 'MISSED'}")
    bound = (args.ping_interval + 2.0) * 1000
    if detections:
        print(f"silent drop detected after {', '.join(f'{d:.0f}' for d in detections)} ms; "
              f"bound ping interval + pong timeout = {bound:.0f} ms; worst/bound = "
              f"{max(detections) / bound:.2f}")
    print("machine after:", h.machine())
    return 0


if __name__ == "__main__":
    sys.exit(main())
