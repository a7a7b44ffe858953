"""``ccstream simulate``: its help, its one-line errors, and a real process run and stopped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccstream import cli
from simulator.faults import PRESETS, FaultKind


def test_help_documents_every_fault_and_preset(capsys: pytest.CaptureFixture[str]) -> None:
    """`ccstream simulate --help` names every fault kind, its settings, and every preset."""
    with pytest.raises(SystemExit) as info:
        cli.main(["simulate", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for kind in FaultKind:
        assert re.search(rf"^  {kind.value} ", out, re.MULTILINE), kind
    for preset in PRESETS:
        assert re.search(rf"^  {preset} ", out, re.MULTILINE), preset
    assert "settings:" in out and "--time-scale" in out


@pytest.mark.parametrize("argv", [
    ["--rate", "fast"], ["--time-scale", "0"], ["--client", "nosecret"],
    ["--client", "a:b:mars"], ["--limit-answer", "999"],
])
def test_bad_options_are_one_line_and_exit_2(argv: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A bad option prints exactly one line on stderr and exits 2."""
    with pytest.raises(SystemExit) as info:
        cli.main(["simulate", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ccstream simulate: error:")


@pytest.mark.parametrize(("script", "needle"), [
    ('[[fault]]\nkind = "close"\ncode = 4242\n', "fault[0].code"),
    ('[[fault]]\nkind = "stall"\n', "fault[0].duration_s"),
    ("[[fault]\n", "not valid TOML"),
    ('[{"kind": "melt"}]', "unknown fault 'melt'"),
])
def test_bad_fault_scripts_are_one_line_and_exit_2(
        tmp_path: Path, script: str, needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad fault script names the file, the entry and the setting, in one line, exit 2."""
    path = tmp_path / ("faults.json" if script.startswith("[{") else "faults.toml")
    path.write_text(script)
    assert cli.main(["simulate", "--faults", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and str(path) in err[0]


def test_unknown_preset_and_bad_inline_fault_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """--faults with an unknown name and a bad --fault each give one line and exit 2."""
    assert cli.main(["simulate", "--faults", "mayhem"]) == 2
    assert "neither a preset" in capsys.readouterr().err
    assert cli.main(["simulate", "--fault", "kind=close,code"]) == 2
    assert "expected key=value" in capsys.readouterr().err


@contextlib.contextmanager
def _simulate(*options: str, until: str) -> Iterator[tuple[str, str]]:
    """``ccstream simulate OPTIONS`` as a real process: what it printed up to the first line
    holding ``until``, and its base URL; it must exit 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--port", "0", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(until in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        base = re.search(r"on (http://127\.0\.0\.1:\d+)", text)
        assert base is not None, text
        yield text, base.group(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_process_prints_a_toml_snippet_serves_and_stops_on_sigterm() -> None:
    """The real process prints URLs and a [[streams]] snippet, serves stats, exits 0 on SIGTERM."""
    with _simulate("--client", "demo:pw:nice", "--rate", "100", "--faults", "chaos",
                   "--preset-interval", "0.5", until="client_secret") as (text, base):
        assert 'platform = "nice"' in text and 'client_id = "demo"' in text
        with urllib.request.urlopen(f"{base}/_sim/stats", timeout=5) as answer:
            stats = json.load(answer)
        assert "nice/demo" in stats["streams"]


def test_the_cxone_flavour_serves_discovery_and_prints_its_streams() -> None:
    """`ccstream simulate --platform cxone` serves its own flavour (discovery answers) and prints
    a cxone [[streams]] block with the secrets in environment variables."""
    with _simulate("--platform", "cxone", "--duration", "20",
                   until="client_secret_env") as (text, base):
        assert 'platform = "cxone"' in text and "access_key_secret_env" in text
        url = f"{base}/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert "token_endpoint" in json.load(answer)


def test_the_genesys_cloud_flavour_serves_the_login_and_prints_its_streams() -> None:
    """`ccstream simulate --platform genesys-cloud` serves its own flavour (its token endpoint
    refuses a wrong client) and prints a genesys-cloud [[streams]] block."""
    with _simulate("--platform", "genesys-cloud", "--duration", "20",
                   until="topics") as (text, base):
        assert 'platform = "genesys-cloud"' in text and "client_secret_env" in text
        request = urllib.request.Request(f"{base}/oauth/token", method="POST",
                                         data=b"grant_type=client_credentials",
                                         headers={"Authorization": "Basic bm9ib2R5Om5vcGU="})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
