"""The main job on embedded defaults: the whole pipeline through a storm of faults.

Starts the local Apache Kafka broker, the platform simulator (several Genesys and NICE streams,
the `chaos` fault preset, platform time compressed so that tokens expire during the run), beside
it the real platforms' simulator flavours (a NICE CXone stream and a Genesys Cloud stream, their
own `chaos` presets, a scheduled `stall` on CXone and `channel_gone` on Genesys Cloud so that a
gap and its backfill show on each), the connector and the dedup worker as real processes; shows
live progress; stops after --duration seconds (or Ctrl-C); lets the pipeline drain; then compares
the seed simulator's ledger of every distinct event it emitted with the clean topic, has the real
platforms' judges (``devtools/judges_*``) weigh their flavours' ledgers against raw, clean and
the reported gaps, and writes report.json and timeline.png. The exit code is 0 only if nothing
is missing, lost or duplicated on any platform.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
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
    compare_by_platform,
    emitted,
    log_lines,
    pipeline_config,
    plan_streams,
    read_cursor,
    read_records,
    read_topic,
)
from devtools.e2e import Verdict as SeedVerdict
from devtools.judges import Rec, Verdict
from devtools.judges_run import PLATFORMS, RealPlatform, real_platforms
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
from simulator import ClientSpec, Fault, SimSettings, Simulator

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
    parser.add_argument("--failover", action="store_true",
                        help="give the Genesys streams a second region (a second simulator "
                             "serving the same events) and take the first one down for a while "
                             "a third into the run: the streams fail over, probe, fail back")
    parser.add_argument("--real-platforms", type=_platform_list, default=PLATFORMS,
                        metavar="LIST",
                        help="the real platforms' streams beside the seed ones, each with its "
                             "simulator flavour in-process and its `chaos` preset (unless "
                             "--faults none): a comma list of " + ", ".join(PLATFORMS)
                             + ", or 'none' (default: both)")


def _platform_list(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("none", ""):
        return ()
    names = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown platform {unknown[0]!r} (known: "
                                         f"{', '.join(PLATFORMS)}, or none)")
    return names


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
    # the real platforms' streams (CXone, Genesys Cloud) and their simulator flavours
    reals: list[RealPlatform] = field(default_factory=list)

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
                 ports: dict[str, int], run_id: str, *, reals: list[RealPlatform],
                 region_b: Simulator | None = None) -> str:
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
    pings: dict[str, dict[str, Any]] = {"genesys": {"ping_interval_s": 12.0 / scale},
                                        "nice": {"ping_interval_s": 25.0 / scale}}
    if region_b is not None:  # the primary region first, then the second (docs/operations.md)
        overrides["connector"].update(failover_after_attempts=3, failback_probe_interval_s=6.0)
        pings["genesys"].update(url=None, token_url=None, endpoints=[
            {"url": sim.stream_url("genesys"), "token_url": sim.token_url},
            {"url": region_b.stream_url("genesys"), "token_url": region_b.token_url}])
    return pipeline_config(bootstrap, plans, urls=urls, token_url=sim.token_url,
                           prefix=f"demo.{run_id}", overrides=overrides, per_platform=pings,
                           extra_streams=[r.entry for r in reals])


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
    for real in run.reals:
        for kind, count in real.faults_fired().items():
            key = f"{real.stream}/{kind}"
            for _ in range(count - seen.get(key, 0)):
                marks.append(FaultMark(round(run.elapsed, 2), kind, real.stream))
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
    reals = {r.stream: (run.raw.count(r.stream, "live"), run.raw.count(r.stream, "backfill"),
                        int(total(metrics, "ccstream_gaps_total", stream=r.stream)))
             for r in run.reals}
    return {"sample": sample, "marks": marks, "reals": reals,
            "causes": by_label(metrics, "ccstream_ws_reconnects_total", "cause")}


def _render(run: DemoRun, tick: dict[str, Any], phase: str) -> str:
    s: Sample = tick["sample"]
    dups = s.duplicates_removed
    causes = ", ".join(f"{k} {int(v)}" for k, v in sorted(tick["causes"].items()) if v) or "-"
    distinct = len(run.clean.view.counts)
    line = (f"[{s.t:6.1f}s {phase:8}] emitted {s.emitted:7d} | raw {s.raw:7d} | "
            f"clean {s.clean:7d} ({distinct} distinct) | duplicates removed {dups:6d} | "
            f"reconnects {s.reconnects:4d} ({causes}) | token refreshes {s.token_refreshes:3d} | "
            f"breakers open {s.breakers_open}")
    reals = " | ".join(f"{name}: live {live}, backfill {backfill}, gaps {gaps}"
                       for name, (live, backfill, gaps) in tick["reals"].items())
    return f"{line}\n{' ' * 19}{reals}" if reals else line


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
    async with (Simulator(_sim_settings(args, plans)) as sim,
                _second_region(args, sim, plans) as region_b,
                real_platforms(args.real_platforms, seed=args.seed,
                               chaos=args.faults != "none") as reals):
        config_path = report_dir / "ccstream.toml"
        config_path.write_text(_config_text(bootstrap, sim, plans, ports, run_id, reals=reals,
                                            region_b=region_b))
        env = {p.secret_env: p.secret for p in plans}
        for real in reals:
            env.update(real.secrets)
        group = ProcessGroup(config_path, report_dir / "logs", env=env)
        topics = _topics(config_path)
        run = DemoRun(args, bootstrap, sim, plans, group, ports,
                      raw=TopicTail(bootstrap, topics["raw"]),
                      clean=TopicTail(bootstrap, topics["clean"]), reals=reals)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        try:
            group.start("dedup", env={"CCSTREAM_METRICS__PORT": str(ports["dedup"])})
            group.start("connect")
            await run.raw.start()
            await run.clean.start()
            names = ", ".join(r.stream for r in reals) or "none"
            print(f"simulator at {sim.token_url.rsplit('/', 2)[0]}; {len(plans)} seed streams; "
                  f"real platforms: {names}; faults: {args.faults}; report in {report_dir}",
                  flush=True)
            if region_b is not None:
                loop.call_later(args.duration / 3, _region_outage, sim, plans)
            async with aiohttp.ClientSession() as http:
                await _watch(run, http, time.monotonic() + args.duration, "live", stop)
                sim.stop_generating()
                for real in reals:
                    real.stop_generating()
                await _drain(run, http)
                code = await _shut_down(run)
                await _tick(run, http)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            await run.raw.stop()
            await run.clean.stop()
            await asyncio.to_thread(group.stop_all)
        final = await read_topic(bootstrap, topics["clean"])
        verdict = compare(emitted(sim.ledger), final)
        judged = await _judge_reals(run, topics) if reals else {}
        clean = await read_records(bootstrap, topics["clean"])
        seeds = compare_by_platform(sim.ledger, clean)
        result = _report(run, verdict.to_json(), seeds=seeds, judged=judged, codes=code,
                         report_dir=report_dir)
        if region_b is not None:
            print(_failover_summary(report_dir / "logs" / "connect.log", sim, region_b))
        return result


@contextlib.asynccontextmanager
async def _second_region(args: argparse.Namespace, primary: Simulator,
                         plans: list[StreamPlan]) -> AsyncIterator[Simulator | None]:
    """``--failover``: a second region serving the primary's Genesys event logs (one tenant's
    data in both regions; the ledger is the streams', so it records what either region sent),
    with its own token endpoint, no faults and no generation of its own."""
    if not args.failover:
        yield None
        return
    genesys = [p for p in plans if p.platform == "genesys"]
    settings = SimSettings(clients=tuple(ClientSpec(p.client_id, p.secret, platforms=("genesys",))
                                         for p in genesys), seed=args.seed + 1, rate=0.0,
                           time_scale=DEMO_TIME_SCALE)
    async with Simulator(settings) as region_b:
        region_b.stop_generating()  # it serves the primary's logs, it adds to none of them
        for plan in genesys:
            region_b.streams["genesys", plan.client_id] = primary.streams["genesys",
                                                                           plan.client_id]
        yield region_b


def _failover_summary(log: Path, primary: Simulator, region_b: Simulator) -> str:
    """``failover  genesys-1: A -> B -> A, ...`` from the connector's ``failover.switched``."""
    names = {primary.stream_url("genesys"): "A", region_b.stream_url("genesys"): "B"}
    moves: dict[str, list[str]] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and doc.get("event") == "failover.switched":
            path = moves.setdefault(str(doc.get("stream")),
                                    [names.get(str(doc.get("source")), "?")])
            path.append(names.get(str(doc.get("target")), "?"))
    paths = ", ".join(f"{s}: {' -> '.join(p)}" for s, p in sorted(moves.items()))
    return f"  failover       {paths or 'none (the streams never left region A)'}"


def _region_outage(primary: Simulator, plans: list[StreamPlan]) -> None:
    """The primary region goes down for a while: every Genesys socket dropped, then its next
    handshakes answered 503 (the streams fail over after 3, and fail back when a probe of the
    primary is answered again)."""
    for plan in plans:
        if plan.platform == "genesys":
            primary.inject(Fault(kind="mass_disconnect", client=plan.client_id,
                                 platform="genesys"))
            primary.inject(Fault(kind="handshake_error", client=plan.client_id,
                                 platform="genesys", status=503, retry_after=1.0, count=5))


async def _shut_down(run: DemoRun) -> dict[str, int | None]:
    """SIGTERM the connector, let the worker catch up with raw, SIGTERM the worker.

    In threads: the simulators on this loop must answer the close handshakes meanwhile."""
    if run.reals:
        await asyncio.sleep(3.0)   # the real platforms' last polls and notifications acked
    for real in run.reals:
        real.mark_shutdown()
    code = {"connect": await asyncio.to_thread(run.group.terminate, "connect")}
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        wanted = {k for k in run.raw.view.counts if k != "?"}
        if wanted <= set(run.clean.view.counts):
            break
        await asyncio.sleep(0.5)
    code["dedup"] = await asyncio.to_thread(run.group.terminate, "dedup")
    return code


async def _judge_reals(run: DemoRun, topics: dict[str, str]) -> dict[str, Verdict]:
    """Each real platform's verdict (``devtools/judges_*``): ledger vs raw, clean, gaps."""
    raw: list[Rec] = await read_records(run.bootstrap, topics["raw"])
    clean: list[Rec] = await read_records(run.bootstrap, topics["clean"])
    lines = log_lines(run.group.procs["connect"].log_path)
    out = {}
    for real in run.reals:
        cursor = await read_cursor(run.bootstrap, topics["cursors"], real.stream) or {}
        out[real.platform] = real.judge(raw, clean, lines, cursor.get("open_gaps", []))
    return out


def _topics(config_path: Path) -> dict[str, str]:
    from ccstream.config import load

    names = load(config_path).topics
    return {"raw": names.raw, "clean": names.clean, "cursors": names.cursors}


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


def _report(run: DemoRun, verdict: dict[str, Any], *, seeds: dict[str, SeedVerdict],
            judged: dict[str, Verdict], codes: dict[str, int | None], report_dir: Path) -> int:
    stats = {cid: s.to_json() for cid, s in run.sim.stats.items()}
    gaps = sum(s.gaps_served for s in run.sim.stats.values())
    report = {
        "finished_at": rfc3339(time.time()),
        "duration_s": run.args.duration, "rate_per_stream": run.args.rate,
        "streams": [p.name for p in run.plans] + [r.stream for r in run.reals],
        "faults_preset": run.args.faults,
        "verdict": verdict, "gaps_reported": gaps,
        "platforms": {**{p: v.to_json() for p, v in seeds.items()},
                      **{p: v.to_json() for p, v in judged.items()}},
        "exit_codes": codes, "faults_fired": len(run.timeline.faults),
        "simulator_stats": stats, "timeline": run.timeline.to_json(),
    }
    (report_dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    run.timeline.draw(report_dir / "timeline.png",
                      f"ccstream demo: {len(run.plans) + len(run.reals)} streams, "
                      f"faults={run.args.faults}")
    ok = (verdict["ok"] and all(v.ok for v in judged.values())
          and all(c == 0 for c in codes.values()))
    print("\n=== ccstream demo report ===")
    for platform, seed in seeds.items():
        print(f"  {platform:14} emitted {seed.emitted}, delivered {seed.delivered}, missing "
              f"{seed.missing}, duplicated {seed.duplicated}, altered {seed.altered}")
    for platform, real in judged.items():
        c, rules = real.counts, real.lost_by_rule()
        print(f"  {platform:14} live {c['live']}, backfilled {c['backfill']}, gaps {c['gaps']} "
              f"(open {c['open_gaps']}), lost {len(real.lost)} (rule 1: {rules[1]}, 2: "
              f"{rules[2]}, 3: {rules[3]}), duplicated {len(real.duplicated)}, rule breaks "
              f"{sum(real.rule_breaks.values())}")
        for loss in real.lost[:5]:
            print(f"  {'':14}   lost (rule {loss.rule}): {loss.item}: {loss.why}")
    print(f"  {'gaps (seed)':14} {gaps}")
    print(f"  {'faults':14} {len(run.timeline.faults)} injected")
    print(f"  {'exit codes':14} {codes}")
    print(f"  {'report':14} {report_dir / 'report.json'}")
    print(f"  {'timeline':14} {report_dir / 'timeline.png'}")
    print(f"  {'verdict':14} {'OK: nothing lost, nothing duplicated' if ok else 'FAILED'}")
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
