"""The faust seam: every private name is checked before the worker starts, and a missing one
stops `ccstream dedup` with exit 2 and one line naming it and the installed version."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccstream import cli
from pipeline import faust_compat


def test_the_installed_faust_has_every_private_name() -> None:
    """The pinned faust-streaming passes the check."""
    faust_compat.check()


def test_a_missing_private_name_stops_dedup_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Removing `Consumer._add_gap` makes `ccstream dedup` exit 2 naming it, before any
    process or broker connection is made."""
    from faust.transport.consumer import Consumer

    monkeypatch.delattr(Consumer, "_add_gap")
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')
    assert cli.main(["dedup", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "faust.transport.consumer.Consumer._add_gap" in err
    assert faust_compat.faust_version() in err


def test_a_changed_transactional_id_format_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transactional id format is read from faust's own source, not assumed."""
    monkeypatch.setattr(faust_compat, "TRANSACTIONAL_ID_SOURCE",
                        (*faust_compat.TRANSACTIONAL_ID_SOURCE[:3], 'f"{other}-{p}"'))
    with pytest.raises(faust_compat.FaustCompatError, match="transactional id format"):
        faust_compat.check()
