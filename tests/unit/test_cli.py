"""The command line: every contract command is listed, and one entry point serves them all."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ccstream import cli

CONTRACT_COMMANDS = ["connect", "dedup", "run", "simulate", "demo", "cursors", "replay"]


def test_help_lists_every_contract_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`ccstream --help` names each command of the CLI contract."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in CONTRACT_COMMANDS:
        assert f"    {command}" in out


def test_python_dash_m_pipeline_is_ccstream() -> None:
    """`python -m pipeline --help` is the same entry point."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0
    assert "replay" in proc.stdout


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Running `ccstream` alone shows the usage and fails."""
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out
