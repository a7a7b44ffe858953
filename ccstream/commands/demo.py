"""The main job on embedded defaults: the whole pipeline through a storm of faults.

Starts the local Apache Kafka broker, the platform simulator (several Genesys and NICE streams,
the `chaos` fault preset, platform time compressed so that tokens expire during the run), the
connector and the dedup worker as real processes; shows live progress; stops after --duration
seconds (or Ctrl-C); lets the pipeline drain; then compares the simulator's ledger of every
distinct event it emitted with the clean topic and writes report.json and timeline.png.
The exit code is 0 only if nothing is missing and nothing is duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from ccstream.records import rfc3339
from devtools import devkafka
from devtools.e2e import (
    ProcessGroup,
    StreamPlan,
    compare,
    emitted,
    pipeline_config,
    plan_streams,
    read_topic,
)
from devtools.live import (
    FaultMark,
    Metrics,
    Sample,
    Timeline,
    TopicTail,
    by_label,
    scrape,
    total,
)
from simulator import ClientSpec, SimSettings, Simulator

# Platform time runs this many times faster in the demo: a NICE token (1 h) lives 60 s, a
# Genesys token (2 h) 120 s, so a default run sees tokens expire and be refreshed.
DEMO_TIME_SCALE = 60.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of live traffic before draining (default 60)")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="events/s per stream (default 40)")
    parser.add_argument("--streams", type=int, default=4,
                        help="number of streams, half Genesys, half NICE (default 4)")
    parser.add_argument("--faults", default="chaos",
                        help="simulator fault preset, or 'none' (default chaos)")
    parser.add_argument("--seed", type=int, default=7, help="seed of events and faults")
    parser.add_argument("--report-dir", type=Path, default=Path("ccstream-report"),
                        help="where report.json, timeline.png and the logs go")
    parser.add_argument("--keep", action="store_true",
                        help="leave the Kafka broker running at the end (stop it with "
                             "`ccstream kafka stop`)")
    parser.add_argument("--drain-timeout", type=float, default=90.0,
                        help="seconds allowed for the pipeline to catch up at the end")


@dataclass
class DemoRun:
    args: argparse.Namespace
    bootstrap: str
    sim: Simulator
    plans: list[StreamPlan]
    group: ProcessGroup
    ports: dict[str, int]
    raw: TopicTail
    clean: TopicTail
    timeline: Timeline = field(default_factory=Timeline)
    started: float = field(default_factory=time.monotonic)
    seen_faults: dict[str, int] = field(default_factory=dict)
    # last answers of the processes' metrics endpoints, kept when a process is between lives
    metrics: dict[str, Metrics] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _sim_settings(args: argparse.Namespace, plans: list[StreamPlan]) -> SimSettings:
    clients = tuple(
        ClientSpec(p.client_id, p.secret, platforms=(p.platform,))
        for p in plans
    )
    preset = None if args.faults == "none" else args.faults
    return SimSettings(clients=clients, seed=args.seed, rate=args.rate, preset=preset,
                       time_scale=DEMO_TIME_SCALE, preset_interval_s=4.0)


def _config_text(bootstrap: str, sim: Simulator, plans: list[StreamPlan],
                 ports: dict[str, int], run_id: str) -> str:
    scale = DEMO_TIME_SCALE
    overrides: dict[str, dict[str, Any]] = {
        # the connector's clocks compressed like the platform's (token buffer 300 s -> 5 s)
        "connector": {"backoff_base_s": 0.2, "backoff_max_s": 4.0, "breaker_cooldown_s": 5.0,
                      "token_safety_buffer_s": 300.0 / scale, "pong_timeout_s": 1.0,
                      "reconnects_per_second": 20.0},
        "dedup": {"session_timeout_s": 6.0},
        "metrics": {"port": ports["connect"]},
    }
    urls = {p: sim.stream_url(p) for p in ("genesys", "nice")}
    # ping intervals compressed too (12 s Genesys, 25 s NICE)
    pings = {"genesys": {"ping_interval_s": 12.0 / scale},
             "nice": {"ping_interval_s": 25.0 / scale}}
    return pipeline_config(bootstrap, plans, urls=urls, token_url=sim.token_url,
                           prefix=f"demo.{run_id}", overrides=overrides, per_platform=pings)


def _fault_marks(run: DemoRun) -> list[FaultMark]:
    """New faults the simulator fired since the last tick (from its per-client counters)."""
    seen = run.seen_faults
    marks = []
    for client_id, stats in run.sim.stats.items():
        for kind, count in stats.faults.items():
            key = f"{client_id}/{kind}"
            for _ in range(count - seen.get(key, 0)):
                marks.append(FaultMark(round(run.elapsed, 2), str(kind), client_id))
            seen[key] = count
    return marks


async def _scrape_all(run: DemoRun, http: aiohttp.ClientSession) -> None:
    for kind, port in run.ports.items():
        fresh = await scrape(http, f"http://127.0.0.1:{port}/metrics")
        if fresh:
            run.metrics[kind] = fresh


async def _tick(run: DemoRun, http: aiohttp.ClientSession) -> dict[str, Any]:
    await _scrape_all(run, http)
    metrics = run.metrics.get("connect", {})
    dedup = run.metrics.get("dedup", {})
    sample = Sample(
        t=round(run.elapsed, 2), emitted=run.sim.ledger.total(), raw=run.raw.view.records,
        clean=run.clean.view.records,
        reconnects=int(total(metrics, "ccstream_ws_reconnects_total")),
        token_refreshes=int(total(metrics, "ccstream_token_refreshes_total", outcome="ok")),
        breakers_open=int(total(metrics, "ccstream_breaker_state") // 2),
        duplicates_removed=int(total(dedup, "ccstream_dedup_duplicates_total")),
    )
    run.timeline.samples.append(sample)
    marks = _fault_marks(run)
    run.timeline.faults.extend(marks)
    return {"sample": sample, "marks": marks,
            "causes": by_label(metrics, "ccstream_ws_reconnects_total", "cause")}


def _render(run: DemoRun, tick: dict[str, Any], phase: str) -> str:
    s: Sample = tick["sample"]
    dups = s.duplicates_removed
    causes = ", ".join(f"{k} {int(v)}" for k, v in sorted(tick["causes"].items()) if v) or "-"
    distinct = len(run.clean.view.counts)
    return (f"[{s.t:6.1f}s {phase:8}] emitted {s.emitted:7d} | raw {s.raw:7d} | "
            f"clean {s.clean:7d} ({distinct} distinct) | duplicates removed {dups:6d} | "
            f"reconnects {s.reconnects:4d} ({causes}) | token refreshes {s.token_refreshes:3d} | "
            f"breakers open {s.breakers_open}")


async def _watch(run: DemoRun, http: aiohttp.ClientSession, until: float, phase: str,
                 done: asyncio.Event) -> None:
    tty = sys.stdout.isatty()
    last_print = 0.0
    while time.monotonic() < until and not done.is_set():
        tick = await _tick(run, http)
        for mark in tick["marks"]:
            print(f"  fault @ {mark.t:6.1f}s: {mark.kind} on {mark.target}", flush=True)
        if tty or run.elapsed - last_print >= 5:
            print(_render(run, tick, phase), flush=True)
            last_print = run.elapsed
        for proc in run.group.procs.values():
            if not proc.alive():
                raise RuntimeError(f"ccstream {proc.kind} exited with {proc.popen.returncode}; "
                                   f"see {proc.log_path}")
        await asyncio.sleep(1.0)


async def _run(args: argparse.Namespace, bootstrap: str, report_dir: Path) -> int:
    plans = plan_streams(genesys=(args.streams + 1) // 2, nice=args.streams // 2)
    run_id = f"{int(time.time())}"
    ports = {"connect": devkafka.free_port(), "dedup": devkafka.free_port()}
    async with Simulator(_sim_settings(args, plans)) as sim:
        config_path = report_dir / "ccstream.toml"
        config_path.write_text(_config_text(bootstrap, sim, plans, ports, run_id))
        env = {p.secret_env: p.secret for p in plans}
        group = ProcessGroup(config_path, report_dir / "logs", env=env)
        topics = _topics(config_path)
        run = DemoRun(args, bootstrap, sim, plans, group, ports,
                      raw=TopicTail(bootstrap, topics["raw"]),
                      clean=TopicTail(bootstrap, topics["clean"]))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            group.start("dedup", env={"CCSTREAM_METRICS__PORT": str(ports["dedup"])})
            group.start("connect")
            await run.raw.start()
            await run.clean.start()
            print(f"simulator at {sim.token_url.rsplit('/', 2)[0]}; {len(plans)} streams; "
                  f"faults: {args.faults}; report in {report_dir}", flush=True)
            async with aiohttp.ClientSession() as http:
                await _watch(run, http, time.monotonic() + args.duration, "live", stop)
                sim.stop_generating()
                await _drain(run, http)
                # in threads: the simulator on this loop must answer the close handshakes
                code = {kind: await asyncio.to_thread(group.terminate, kind)
                        for kind in ("connect", "dedup")}
                await _tick(run, http)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await run.raw.stop()
            await run.clean.stop()
            await asyncio.to_thread(group.stop_all)
        final = await read_topic(bootstrap, topics["clean"])
        verdict = compare(emitted(sim.ledger), final)
        return _report(run, verdict.to_json(), code, report_dir)


def _topics(config_path: Path) -> dict[str, str]:
    from ccstream.config import load

    names = load(config_path).topics
    return {"raw": names.raw, "clean": names.clean}


async def _drain(run: DemoRun, http: aiohttp.ClientSession) -> None:
    """Let the connector and the worker catch up with everything the simulator emitted."""
    print("traffic stopped; draining until every emitted event is in the clean topic...",
          flush=True)
    done = asyncio.Event()

    async def check() -> None:
        while not done.is_set():
            ledger = emitted(run.sim.ledger)
            if ledger and all(k in run.clean.view.counts for k in ledger):
                done.set()
            await asyncio.sleep(0.5)

    checker = asyncio.create_task(check())
    try:
        await _watch(run, http, time.monotonic() + run.args.drain_timeout, "draining", done)
    finally:
        checker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await checker


def _report(run: DemoRun, verdict: dict[str, Any], codes: dict[str, int | None],
            report_dir: Path) -> int:
    stats = {cid: s.to_json() for cid, s in run.sim.stats.items()}
    gaps = sum(s.gaps_served for s in run.sim.stats.values())
    report = {
        "finished_at": rfc3339(time.time()),
        "duration_s": run.args.duration, "rate_per_stream": run.args.rate,
        "streams": [p.name for p in run.plans], "faults_preset": run.args.faults,
        "verdict": verdict, "gaps_reported": gaps,
        "exit_codes": codes, "faults_fired": len(run.timeline.faults),
        "simulator_stats": stats, "timeline": run.timeline.to_json(),
    }
    (report_dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    run.timeline.draw(report_dir / "timeline.png",
                      f"ccstream demo: {len(run.plans)} streams, faults={run.args.faults}")
    ok = verdict["ok"] and all(c == 0 for c in codes.values())
    print("\n=== ccstream demo report ===")
    for key in ("emitted", "delivered", "missing", "duplicated", "altered"):
        print(f"  {key:12} {verdict[key]}")
    print(f"  {'gaps':12} {gaps}")
    print(f"  {'faults':12} {len(run.timeline.faults)} injected")
    print(f"  exit codes   {codes}")
    print(f"  report       {report_dir / 'report.json'}")
    print(f"  timeline     {report_dir / 'timeline.png'}")
    print(f"  verdict      {'OK: nothing lost, nothing duplicated' if ok else 'FAILED'}")
    return 0 if ok else 1


def main(args: argparse.Namespace) -> int:
    report_dir: Path = args.report_dir.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    print("starting the local Apache Kafka broker (the first run downloads it, ~1 min)...",
          flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="ccstream-demo-kafka-"))
    kafka = devkafka.KafkaCluster(workdir, tied=not args.keep)
    try:
        kafka.start()
    except devkafka.DevKafkaError as err:
        print(f"ccstream demo: {err}", file=sys.stderr)
        return 1
    print(f"broker up at {kafka.bootstrap_servers}", flush=True)
    try:
        return asyncio.run(_run(args, kafka.bootstrap_servers, report_dir))
    finally:
        if args.keep:
            print(f"broker left running at {kafka.bootstrap_servers} (pid file in {workdir}; "
                  f"stop with: ccstream kafka stop --dir {workdir})")
        else:
            kafka.stop()
