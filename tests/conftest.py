"""Shared fixtures: one real Apache Kafka broker per pytest run, started lazily.

The broker is ``devtools.devkafka.KafkaCluster`` (the Apache Kafka server itself, KRaft, on
127.0.0.1): started the first time a test asks for ``kafka``, stopped by pid when the run ends,
and tied to this process so that even a ``kill -9`` of pytest leaves no broker behind. Missing
Java or Maven fails the run with one clear line; nothing is skipped.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

# imported here, before any thread runs: hypothesis's pytest plugin otherwise imports it (and
# pytest rewrites it, with ast.parse) in the terminal summary of a run that collected no
# hypothesis test, after brokers, executors and the simulator have run threads, where CPython
# 3.11.7 sometimes fails with "AST constructor recursion depth mismatch" (python/cpython#106905,
# pytest-dev/pytest#10763; fixed in 3.11.8) and a passing run ends in an internal error
import hypothesis  # noqa: F401
import pytest

from devtools import devkafka


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devkafka.KafkaCluster]:
    """A running single-node Kafka broker shared by the whole run."""
    try:
        cluster = devkafka.KafkaCluster(tmp_path_factory.mktemp("kafka"), size=1, tied=True)
        cluster.start()
    except devkafka.DevKafkaError as err:
        pytest.fail(f"local Kafka broker unavailable: {err}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def bootstrap(kafka: devkafka.KafkaCluster) -> str:
    """The bootstrap servers of the shared broker."""
    return kafka.bootstrap_servers


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix unique to this test, so that tests sharing the broker never share topics."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:60]
    return f"t.{name}.{uuid.uuid4().hex[:8]}"


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path


# -- platform simulator (connectors/simulator) -------------------------------------------------
# Imports are local so that the shared fixtures above never depend on the simulator package.
SIM_CLIENT_ID = "acme"
SIM_SECRET = "s3cret-acme"


@pytest.fixture
async def simulator():  # type: ignore[no-untyped-def]
    """A started platform simulator on a free loopback port: client ``acme`` (secret
    ``SIM_SECRET``) on both platforms, 50 events/s per stream, seeded; tests needing other
    settings build their own ``Simulator(SimSettings(...))``."""
    from simulator import ClientSpec, SimSettings, Simulator

    settings = SimSettings(clients=(ClientSpec(SIM_CLIENT_ID, SIM_SECRET),), seed=1, rate=50.0)
    async with Simulator(settings) as sim:
        yield sim


async def _sim_token(sim, client_id=SIM_CLIENT_ID, secret=SIM_SECRET):  # type: ignore[no-untyped-def]
    """An access token from the simulator, by the client-credentials grant (no ccstream code)."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        answer = await http.post(
            sim.token_url, data={"grant_type": "client_credentials"},
            headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
        )
        answer.raise_for_status()
        return str((await answer.json())["access_token"])


@pytest.fixture
def sim_token():  # type: ignore[no-untyped-def]
    """``await sim_token(sim, client_id=..., secret=...)``: an access token from a simulator."""
    return _sim_token


# -- the chaos suite's table ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def chaos_table(request: pytest.FixtureRequest) -> list[dict[str, object]]:
    """Rows (scenario, events, missing, duplicated, recovery_s) printed at the end of the run."""
    rows: list[dict[str, object]] = []
    request.config.stash[_CHAOS_ROWS] = rows
    return rows


_CHAOS_ROWS = pytest.StashKey[list[dict[str, object]]]()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    rows = config.stash.get(_CHAOS_ROWS, [])
    if not rows:
        return
    terminalreporter.section("chaos suite")
    terminalreporter.write_line(f"{'scenario':42} {'events':>7} {'missing':>8} "
                                f"{'duplicated':>10} {'recovery s':>10}")
    for row in rows:
        recovery = row["recovery_s"]
        terminalreporter.write_line(
            f"{row['scenario']!s:42} {row['events']!s:>7} {row['missing']!s:>8} "
            f"{row['duplicated']!s:>10} {'-' if recovery is None else recovery!s:>10}")
