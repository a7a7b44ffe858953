"""The layout's one import rule, and the pure modules' purity, enforced on the source text.

Every import counts, including those inside functions (lazy imports are still dependencies).
The rule (README, "Architecture"): the kernel ``ccstream`` is below everything; ``policy`` is
below the drivers; the simulator and the dedup pipeline never reach into the connector; the CLI
(``ccstream.cli``, ``ccstream.commands``) is on top and may use anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ccstream", "connectors", "pipeline", "simulator", "devtools")
CLI = ("ccstream.cli", "ccstream.commands")
# what each layer may import of the project's own packages (prefixes)
ALLOWED: dict[str, tuple[str, ...]] = {
    "ccstream": ("ccstream",),                      # the kernel (CLI excepted, below)
    "connectors.policy": ("ccstream", "connectors.policy"),
    "connectors.platforms": ("ccstream", "connectors.policy", "connectors.platforms"),
    "connectors": ("ccstream", "connectors"),
    "pipeline": ("ccstream", "pipeline"),
    "simulator": ("ccstream", "simulator"),
    "devtools": ("ccstream", "simulator", "devtools"),
}
# modules that decide and never do: no clock, no randomness, no I/O, no event loop
FORBIDDEN_IN_PURE = ("asyncio", "time", "random", "socket", "ssl", "select", "selectors",
                     "threading", "subprocess", "websockets", "aiohttp", "aiokafka", "faust",
                     "mode", "urllib.request", "http.client", "python_socks", "aiohttp_socks")
# libraries used through one module only: the seam that says how they are used and maps their
# errors (faust and mode's private names have theirs, pipeline/faust_compat.py, checked apart)
SEAMS: dict[str, str] = {
    "python_socks": "connectors/sources/proxy.py",
    "aiohttp_socks": "connectors/sources/proxy.py",
}
PURE = sorted({
    *(p for p in (ROOT / "connectors" / "policy").glob("*.py")),
    ROOT / "pipeline" / "bloom.py",
    ROOT / "pipeline" / "dedup" / "state.py",
    ROOT / "simulator" / "faults.py",
    ROOT / "simulator" / "board.py",
    # the CXone flavour: everything but its aiohttp server, handlers and command
    *(ROOT / "simulator" / "cxone" / f"{m}.py" for m in (
        "values", "settings", "model", "completed", "tokens", "rules", "stats", "faults",
        "board", "ledger")),
    # the Genesys Cloud flavour: everything but its aiohttp server, REST, streaming, firing, CLI
    *(ROOT / "simulator" / "genesys_cloud" / f"{m}.py" for m in (
        "settings", "model", "access", "channels", "coverage", "analytics", "generator",
        "faults", "board", "frames", "stats")),
})


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _own(name: str) -> bool:
    return name.split(".", maxsplit=1)[0] in PACKAGES


def _layer(module: str) -> str | None:
    if any(module == c or module.startswith(c + ".") for c in CLI):
        return None  # the CLI is on top
    return max((layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")),
               key=len)


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    """A module imports only from its own layer and the layers below it."""
    module = _module(path)
    layer = _layer(module)
    if layer is None:
        return
    wrong = sorted(name for name in _imports(path) if _own(name)
                   and not any(name == a or name.startswith(a + ".") for a in ALLOWED[layer]))
    assert not wrong, f"{module} (layer {layer}) imports {wrong}"


def test_seamed_libraries_are_imported_by_their_seam_only() -> None:
    """python-socks and aiohttp-socks are reached through ``connectors.sources.proxy`` only."""
    wrong = sorted((str(path.relative_to(ROOT)), name) for path in _sources()
                   for name in _imports(path) for lib, seam in SEAMS.items()
                   if (name == lib or name.startswith(lib + "."))
                   and str(path.relative_to(ROOT)) != seam)
    assert not wrong
    for lib, seam in SEAMS.items():  # and the seam does use them (the rule is not vacuous)
        assert lib in _imports(ROOT / seam)


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_stay_pure(path: Path) -> None:
    """Policies, the Bloom filter, the dedup state and the simulator's fault logic import no
    clock, randomness, network, event loop or Kafka client."""
    bad = sorted(name for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_PURE))
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    """The checker itself: a policy importing aiohttp or a driver is reported."""
    sample = tmp_path / "sample.py"
    sample.write_text("import aiohttp\nfrom connectors.kafka import sink\n")
    assert "aiohttp" in _imports(sample)
    assert _layer("connectors.policy.backoff") == "connectors.policy"
    assert "connectors.kafka.sink" in _imports(sample)
    assert not any("connectors.kafka.sink".startswith(a) for a in ALLOWED["connectors.policy"])
