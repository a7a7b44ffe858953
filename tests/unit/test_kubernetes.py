"""docker/kubernetes.yaml, the example manifest: parsed and checked (no cluster runs the tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ccstream.config import StreamConfig, parse

MANIFEST = Path(__file__).resolve().parents[2] / "docker" / "kubernetes.yaml"


def _documents() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {d["kind"]: d for d in docs}


def _container() -> dict[str, Any]:
    spec = _documents()["Deployment"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    return dict(container)


def _config() -> Any:
    import tomllib

    text = _documents()["ConfigMap"]["data"]["ccstream.toml"]
    return parse(tomllib.loads(text), environ={})


def test_the_config_map_is_a_valid_ccstream_config() -> None:
    """The embedded ccstream.toml passes ccstream's own validation (failover and maintenance
    included) and serves metrics on every interface."""
    cfg = _config()
    assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.port is not None
    assert any(isinstance(s, StreamConfig) and len(s.endpoint_list()) == 2 for s in cfg.streams)
    assert cfg.maintenance


def test_termination_grace_exceeds_the_connector_grace_period() -> None:
    """The kubelet waits longer than ccstream needs to close, flush and commit."""
    pod = _documents()["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _config().connector.grace_period_s


def test_probes_use_healthz_and_readyz_on_the_metrics_port() -> None:
    """Liveness and start-up on /healthz, readiness on /readyz, on the configured port."""
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == _config().metrics.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["args"] == ["connect", "--config", "/etc/ccstream/ccstream.toml"]


def test_every_secret_comes_from_a_secret() -> None:
    """Each variable a stream names in ``client_secret_env`` is set from a Secret, and no env
    entry carries a literal secret."""
    container = _container()
    env = {e["name"]: e for e in container["env"]}
    for stream in _config().streams:
        entry = env[stream.client_secret_env]
        assert "value" not in entry
        assert entry["valueFrom"]["secretKeyRef"]["name"] == "ccstream-secrets"
    mount = container["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/ccstream" and mount["readOnly"] is True
