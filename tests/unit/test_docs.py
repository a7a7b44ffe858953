"""Docs that cannot drift: every log event the code emits and every configuration key is
documented in the README or docs/, and no tracked file outside docs/ sends a reader out of the
repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from ccstream import config

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ccstream", "connectors", "pipeline", "simulator", "devtools")
# a structured log call: log.info("ws.connected", ...) and the dedup worker's _die("dedup.x", ...)
EVENT = re.compile(r"""\b(?:debug|info|warning|error|exception|_die)\(\s*"""
                   r"""["']([a-z_]+(?:\.[a-z_]+)+)["']""")


def _documented() -> str:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return "\n".join(p.read_text() for p in pages)


def _events() -> set[str]:
    found: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found.update(EVENT.findall(path.read_text()))
    return found


def _keys(model: type[BaseModel], prefix: str) -> list[str]:
    return [f"{prefix}{name}" for name in model.model_fields]


def _config_keys() -> list[str]:
    keys: list[str] = []
    for section, field in config.Config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _keys(annotation, f"{section}.")
    for stream in (config.StreamConfig, config.GenesysCloudStream, config.CxoneStream):
        keys += _keys(stream, "streams.")
    return keys


def test_the_scanner_finds_events() -> None:
    """The event scanner sees the connector's and the dedup worker's vocabulary."""
    events = _events()
    assert {"ws.connected", "cursor.committed", "dedup.partitions_assigned"} <= events


@pytest.mark.parametrize("event", sorted(_events()))
def test_every_log_event_is_documented(event: str) -> None:
    """A log event name the code emits appears in the README or docs/ (`name`)."""
    assert f"`{event}`" in _documented(), f"log event {event} is not in the README or docs/"


@pytest.mark.parametrize("key", _config_keys())
def test_every_config_key_is_documented(key: str) -> None:
    """A configuration key appears in the README's configuration block or in docs/."""
    name = key.rsplit(".", 1)[1]
    text = _documented()
    assert re.search(rf"(^|[\s`#]){re.escape(name)}(\s*=|`)", text, re.M), \
        f"config key {key} is not documented"


def test_no_tracked_file_outside_docs_points_outside_the_repository() -> None:
    """A user who clones the repository has no folder beside it: nothing but docs/ may send a
    reader to the shared folder the developers have next to the checkout."""
    outside = "../" + "shared"  # written so that this file does not name it either
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    bad = [f for f in files if not f.startswith("docs/")
           and Path(ROOT, f).is_file() and f.endswith((".py", ".md", ".toml", ".yaml", ".txt"))
           and outside in Path(ROOT, f).read_text(errors="replace")]
    assert not bad, f"these send a reader outside the repository: {bad}"
