"""A real Apache Kafka broker on demand, for tests, the demo and the benchmarks.

The broker is the Apache Kafka server itself (KRaft mode, combined broker+controller), fetched
once as jars from Maven Central by ``mvn dependency:copy-dependencies`` from the small pom in
``devtools/kafka/pom.xml`` into a cache folder outside the repository, and run with ``java`` on
127.0.0.1 on free ports. Nothing is mocked: aiokafka and faust talk to it over TCP.

Why Kafka 4.x: aiokafka 0.14 and faust-streaming 0.15 were checked against 4.1.1 (idempotent
producer, transactions, consumer groups, faust ``exactly_once`` with a changelogged table), so
the newest line is used; ``CCSTREAM_KAFKA_VERSION`` selects another (e.g. 3.9.1) without code
changes.

Processes are stopped only by the pid this module started them with. A broker started for a test
run is *tied* to its parent: ``PR_SET_PDEATHSIG`` makes the kernel kill it if the parent dies,
even by ``kill -9``, so an interrupted run leaves no broker behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ccstream.paths import cache_root
from ccstream.procs import popen_tied

KAFKA_VERSION = os.environ.get("CCSTREAM_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"
POM_TEMPLATE = Path(__file__).with_name("kafka") / "pom.xml"
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0



class DevKafkaError(RuntimeError):
    """The local broker could not be fetched, started or reached; the message says why."""


def require_tools() -> None:
    """Fail with one clear line if Java or Maven is missing (never a silent skip)."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise DevKafkaError(
            f"{' and '.join(missing)} not found on PATH: the local Kafka broker needs Java 17+ "
            "and Maven (apt-get install openjdk-17-jre-headless maven)"
        )


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(version: str = KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Return the folder of broker jars for ``version``, fetching them from Maven Central once.

    Concurrent callers (parallel test runs) serialise on a lock file; a completed fetch is marked
    by a stamp so that a half-finished download is never used.
    """
    require_tools()
    home = cache_root() / f"kafka-{version}"
    libs, stamp = home / "libs", home / "complete"
    if stamp.exists():
        return libs
    with _file_lock(home / ".lock"):
        if stamp.exists():
            return libs
        if libs.exists():
            shutil.rmtree(libs)
        pom = home / "pom.xml"
        pom.write_text(
            POM_TEMPLATE.read_text()
            .replace("@KAFKA_VERSION@", version)
            .replace("@LOG4J_VERSION@", LOG4J_VERSION)
        )
        cmd = [
            "mvn", "-B", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
        ]
        if quiet:
            cmd.insert(1, "-q")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not any(libs.glob(f"kafka_2.13-{version}.jar")):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise DevKafkaError(f"fetching Apache Kafka {version} with Maven failed:\n{tail}")
        stamp.write_text(version)
    return libs


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = info
"""

# Settings for a fast, small, single-machine broker. Why each one:
FAST_SETTINGS: dict[str, str] = {
    # a consumer group forms at once instead of waiting 3 s for more members
    "group.initial.rebalance.delay.ms": "0",
    # failover tests use session timeouts of a few seconds (the default floor is 6 s)
    "group.min.session.timeout.ms": "1000",
    # fewer internal partitions: faster first group / first transaction on 2 cores
    "offsets.topic.num.partitions": "4",
    "transaction.state.log.num.partitions": "4",
    # ccstream creates its own topics (contract); auto-creation would hide a missing create
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    # compaction of the cursor topic is visible within a test's lifetime
    "log.cleaner.backoff.ms": "1000",
    # a committed transaction is visible to read_committed consumers without delay
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
    "transaction.remove.expired.transaction.cleanup.interval.ms": "5000",
}


@dataclass
class Node:
    """One KRaft node (broker+controller) of a local cluster."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class KafkaCluster:
    """One or more local Kafka nodes on 127.0.0.1; ``size=1`` is the usual single broker.

    ``tied=True`` (tests) makes each broker die with the process that started it; ``False``
    (``ccstream kafka start``, ``ccstream demo --keep``) leaves it running, found again by the
    pid file in ``workdir``.
    """

    workdir: Path
    size: int = 1
    tied: bool = True
    heap: str = "512m"
    extra_settings: dict[str, str] = field(default_factory=dict)
    log_level: str = "WARN"
    nodes: list[Node] = field(default_factory=list)
    cluster_id: str = ""

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    # -- configuration ------------------------------------------------------------------------

    def _plan(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = _random_cluster_id()
        self.nodes = [
            Node(i, free_port(), free_port(), self.workdir / f"node-{i}")
            for i in range(1, self.size + 1)
        ]

    def _properties(self, node: Node) -> dict[str, str]:
        replication = str(min(3, self.size))
        min_isr = "2" if self.size >= 3 else "1"
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir / "data"),
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            **FAST_SETTINGS,
            **self.extra_settings,
        }
        return props

    def _write_config(self, node: Node) -> Path:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        conf = node.data_dir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in self._properties(node).items()))
        (node.data_dir / "log4j2.properties").write_text(
            LOG4J2_PROPERTIES.format(log=node.data_dir / "server.log", level=self.log_level)
        )
        return conf

    def _java(self, libs: Path, node: Node, main: str, *args: str) -> list[str]:
        return [
            "java", f"-Xmx{self.heap}", "-Xms128m", "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.data_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main, *args,
        ]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> KafkaCluster:
        """Fetch (once), format and start every node; return when metadata requests answer."""
        libs = fetch()
        self._plan()
        for node in self.nodes:
            conf = self._write_config(node)
            fmt = subprocess.run(
                # one argument: a random id may start with "-" and read as an option
                self._java(libs, node, "kafka.tools.StorageTool", "format",
                           f"--cluster-id={self.cluster_id}", "-c", str(conf)),
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise DevKafkaError(f"formatting KRaft storage failed: {fmt.stdout}{fmt.stderr}")
        for node in self.nodes:
            self._spawn(libs, node)
        self._write_pidfile()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, libs: Path, node: Node) -> None:
        out = (node.data_dir / "stdout.log").open("ab")
        command = self._java(libs, node, "kafka.Kafka", str(node.data_dir / "server.properties"))
        if self.tied:  # forked from a thread that lives as long as this process (procs.py)
            node.process = popen_tied(command, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        else:
            node.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()

    def _write_pidfile(self) -> None:
        lines = [f"{n.node_id} {n.process.pid if n.process else 0} {n.address}" for n in self.nodes]
        (self.workdir / "brokers.pid").write_text("\n".join(lines) + "\n")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until every running node answers a metadata request with all live brokers."""
        deadline = time.monotonic() + timeout
        expected = sum(1 for n in self.nodes if n.running)
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise DevKafkaError(
                        f"Kafka node {node.node_id} exited with {node.process.returncode}; "
                        f"see {node.data_dir / 'server.log'}\n{self.log_tail(node)}"
                    )
            if _metadata_brokers(self.bootstrap_servers) >= expected:
                return
            if time.monotonic() > deadline:
                raise DevKafkaError(f"Kafka did not answer within {timeout:.0f} s")
            time.sleep(0.2)

    def log_tail(self, node: Node, lines: int = 20) -> str:
        log = node.data_dir / "server.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop_node(self, node_id: int, *, kill: bool = False) -> None:
        """Stop one node: SIGTERM (controlled shutdown) or, with ``kill``, SIGKILL."""
        node = self._node(node_id)
        if node.process is None or node.process.poll() is not None:
            return
        node.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            node.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()

    def start_node(self, node_id: int, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Start a stopped or killed node again on its old ports and data."""
        node = self._node(node_id)
        if node.running:
            return
        self._spawn(fetch(), node)
        self._write_pidfile()
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node this object started (by pid), then remove nothing: logs stay."""
        for node in self.nodes:
            if node.running and node.process is not None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        pidfile = self.workdir / "brokers.pid"
        if pidfile.exists():
            pidfile.unlink()

    def _node(self, node_id: int) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(f"no Kafka node {node_id} in this cluster")

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _random_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _metadata_brokers(bootstrap: str) -> int:
    """How many brokers a metadata request reports (0 if nobody answers)."""

    async def probe() -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await asyncio.wait_for(admin.start(), 5)
            cluster = await asyncio.wait_for(admin.describe_cluster(), 5)
            return len(cluster.get("brokers", []))
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return 0
        finally:
            await admin.close()

    import logging

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(probe())
        # called from async code (a test, the demo): probe on a loop of its own, in a thread
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, probe()).result()
    finally:
        quiet.setLevel(level)


# -- the detached broker of `ccstream kafka start|stop|status` ---------------------------------


def default_workdir() -> Path:
    default = Path(tempfile.gettempdir()) / "ccstream-kafka"
    return Path(os.environ.get("CCSTREAM_KAFKA_DIR", default))


def read_pidfile(workdir: Path) -> list[tuple[int, int, str]]:
    pidfile = workdir / "brokers.pid"
    if not pidfile.exists():
        return []
    rows = []
    for line in pidfile.read_text().splitlines():
        node_id, pid, address = line.split()
        rows.append((int(node_id), int(pid), address))
    return rows


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_detached(workdir: Path, wait: Callable[[float], None] = time.sleep) -> int:
    """Stop the brokers recorded in ``workdir``'s pid file; return how many were running."""
    stopped = 0
    rows = read_pidfile(workdir)
    for _, pid, _ in rows:
        if pid and is_alive(pid):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for _, pid, _ in rows:
        while pid and is_alive(pid) and time.monotonic() < deadline:
            wait(0.2)
        if pid and is_alive(pid):
            os.kill(pid, signal.SIGKILL)
    pidfile = workdir / "brokers.pid"
    if pidfile.exists():
        pidfile.unlink()
    return stopped
