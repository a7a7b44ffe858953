"""What every ccstream benchmark needs: the machine line, the broker, the simulator as its own
process, and CPU/RSS read from ``/proc`` (no psutil dependency for this).

Not a benchmark itself. ``python bench/_harness.py sim ...`` is the simulator host role: one
``simulator.Simulator`` in its own process (so that its CPU is not the client's),
optionally with a pre-emitted backlog per stream, printing ``READY <port>`` once it listens and
serving until SIGTERM. Every process a benchmark starts is stopped by its own pid in a
``finally`` block (``Child``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
# the project's own packages (what "the code measured" and "frames in ccstream code" mean)
CODE_DIRS = ("ccstream", "connectors", "pipeline", "simulator", "devtools")


# -- reporting ----------------------------------------------------------------------------------
def print_header(title: str) -> None:
    print(title)
    print("command:", " ".join([sys.executable, *sys.argv]))
    print("machine:", machine())
    print("code:", code_state())


def code_state() -> str:
    """The commit measured, and whether the measured packages had uncommitted changes (read
    only: ``git rev-parse`` and ``git status``)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *CODE_DIRS],
                               cwd=REPO, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = len(dirty.splitlines())
    return f"{head}" + (f" + {changed} uncommitted files in connectors/ pipeline/"
                        if changed else "")


def machine() -> str:
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"nproc={os.cpu_count()} ram={total_kb / 1024**2:.1f}GiB loadavg={load}"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# -- /proc ------------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) and of its live descendants
    (``ccstream dedup`` is a supervisor whose worker is a child process)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    for child in _children(pid):
        with contextlib.suppress(OSError):  # exited meanwhile
            total += cpu_seconds(child)
    return total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


# -- processes --------------------------------------------------------------------------------
@dataclass
class Child:
    """A process this benchmark started; ``stop`` signals only its own pid."""

    popen: subprocess.Popen[bytes]
    name: str
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, grace: float = 15.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
                return None
        return self.popen.returncode


@dataclass
class Children:
    items: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log_path: Path | None = None,
              env: dict[str, str] | None = None) -> Child:
        out = log_path.open("ab") if log_path else subprocess.DEVNULL
        popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                 cwd=REPO)
        child = Child(popen, name, log_path)
        self.items.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.items):
            child.stop()
        self.items.clear()


@contextlib.contextmanager
def kafka_broker(workdir: Path) -> Iterator[str]:
    """A real single-node Apache Kafka broker for the benchmark; its bootstrap servers."""
    from devtools.devkafka import KafkaCluster

    cluster = KafkaCluster(workdir / "kafka", size=1, tied=True)
    cluster.start()
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)


def log_dir(bench: str, *, clear: bool = True) -> Path:
    """Where a benchmark's child processes log: kept after the run (cleared by the next)."""
    path = Path(tempfile.gettempdir()) / "ccstream-bench" / bench
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.log") if clear else ():
        old.unlink()
    return path


def start_sim(children: Children, log_dir: Path, *, clients: int, rate: float,
              backlog: int = 0, max_connections: int = 10, platform: str = "genesys",
              duplicate_rate: float = 0.0, retention_events: int = 100_000,
              extra: Sequence[str] = ()) -> tuple[Child, int]:
    """The simulator host in its own process; returns it and its port once it listens."""
    log_path = log_dir / "sim.log"
    child = children.start("sim", [
        sys.executable, str(BENCH_DIR / "_harness.py"), "sim", "--clients", str(clients),
        "--rate", str(rate), "--backlog", str(backlog), "--max-connections", str(max_connections),
        "--platform", platform, "--duplicate-rate", str(duplicate_rate),
        "--retention-events", str(retention_events), *extra], log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("READY "):
                return child, int(line.split()[1])
        if child.popen.poll() is not None:
            raise RuntimeError(f"simulator exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("simulator did not start within 120 s")


def client_secret(index: int) -> str:
    return f"bench-secret-{index}"


# -- profiles ---------------------------------------------------------------------------------
def start_py_spy(children: Children, pid: int, seconds: float, out: Path, *,
                 idle: bool = False) -> Child:
    """py-spy (``pip install py-spy`` into .venv, not a project dependency) sampling ``pid``
    for ``seconds``, collapsed stacks into ``out``."""
    spy = Path(sys.executable).parent / "py-spy"
    argv = [str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
            "-f", "raw", "-o", str(out), "--nonblocking", *(["--idle"] if idle else [])]
    return children.start("py-spy", argv, out.with_suffix(".log"))


def summarize_collapsed(path: Path, top: int = 15) -> str:
    """The hottest frames of a collapsed-stack profile: self share and inclusive share."""
    from collections import Counter

    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples; self %   frame"]
    lines += [f"  {100 * n / total:5.1f}   {frame}" for frame, n in self_time.most_common(top)]
    lines.append("inclusive % (frames in ccstream's own packages)")
    ours = [(f, n) for f, n in inclusive.most_common() if any(f"{d}/" in f for d in CODE_DIRS)]
    lines += [f"  {100 * n / total:5.1f}   {frame}" for frame, n in ours[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return f"{head}({tail.split(marker, 1)[1]}"
    return frame


# -- the simulator host role ---------------------------------------------------------------------
async def _serve_sim(args: argparse.Namespace) -> None:
    from simulator import ClientSpec, SimSettings, Simulator

    platforms = (args.platform,)
    clients = tuple(ClientSpec(f"tenant-{i}", client_secret(i), platforms=platforms)
                    for i in range(args.clients))
    settings = SimSettings(clients=clients, seed=7, rate=args.rate,
                           duplicate_rate=args.duplicate_rate,
                           retention_events=max(args.retention_events, args.backlog + 1),
                           max_connections=args.max_connections, port=0,
                           correlation_ids=args.correlation_ids)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(settings) as sim:
        for spec in clients:
            if args.backlog:
                sim.emit(args.platform, spec.client_id, args.backlog)
        print(f"READY {sim.port}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench helper roles")
    sub = parser.add_subparsers(dest="role", required=True)
    sim = sub.add_parser("sim")
    sim.add_argument("--clients", type=int, default=1)
    sim.add_argument("--rate", type=float, default=0.0)
    sim.add_argument("--backlog", type=int, default=0)
    sim.add_argument("--max-connections", type=int, default=10)
    sim.add_argument("--platform", default="genesys")
    sim.add_argument("--duplicate-rate", type=float, default=0.0)
    sim.add_argument("--retention-events", type=int, default=100_000)
    sim.add_argument("--correlation-ids", type=int, default=200)
    args = parser.parse_args(argv)
    if args.role == "sim":
        asyncio.run(_serve_sim(args))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
