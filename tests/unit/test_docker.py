"""The compose file for users: parsed and checked here, since no Docker engine runs the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ccstream.config import load

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _compose() -> dict[str, object]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def test_compose_runs_kafka_simulator_connector_and_dedup() -> None:
    """The four services exist, Kafka is the official image in KRaft mode, ports are published."""
    services = _compose()["services"]
    assert isinstance(services, dict)
    assert set(services) == {"kafka", "simulator", "connector", "dedup"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "29092:29092" in kafka["ports"]
    assert services["connector"]["command"][:1] == ["connect"]
    assert services["dedup"]["command"][:1] == ["dedup"]
    assert services["simulator"]["command"][:1] == ["simulate"]
    assert "8080:8080" in services["simulator"]["ports"]


def test_compose_config_file_is_a_valid_ccstream_config() -> None:
    """docker/ccstream.toml passes ccstream's own validation."""
    cfg = load(DOCKER / "ccstream.toml", environ={})
    assert cfg.kafka.bootstrap_servers == "kafka:9092"
    assert {s.platform for s in cfg.streams} == {"genesys", "nice"}


def test_dockerfile_installs_the_package_and_runs_ccstream() -> None:
    """The image installs ccstream and its entry point is the ccstream command."""
    text = (DOCKER / "Dockerfile").read_text()
    assert "pip install" in text
    assert 'ENTRYPOINT ["ccstream"]' in text


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose (Debian package) not installed; .ci/run installs it")
def test_docker_compose_parses_the_file() -> None:
    """`docker-compose config` accepts the file without a Docker engine."""
    proc = subprocess.run(["docker-compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_image_holds_every_package_at_the_locked_versions() -> None:
    """The Dockerfile copies every package pyproject.toml ships and installs with the
    constraints the tests ran with."""
    import tomllib

    text = (DOCKER / "Dockerfile").read_text()
    project = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for package in packages:
        assert f"COPY {package} ./{package}" in text, package
    assert "-c constraints.txt" in text
