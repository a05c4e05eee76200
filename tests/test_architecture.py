"""The import graph of `monitor/`: no cycles between modules or packages, and the ground floor imports nothing above it.

Read from the source with `ast`, so every import counts: top level, inside functions (lazy) and
under `TYPE_CHECKING`. A lazy import is still an arrow: it is how a cycle hides.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "monitor"

# The ground floor: these import nothing of monitor but each other (config also monitor.errors).
# The metric catalogue: a table of names, columns and kinds that config validates rule metrics against.
CATALOGUE = {"monitor.metric_catalog"}

GROUND = {
    "monitor.errors": set(),
    "monitor.untrusted": set(),
    "monitor.envelope": {"monitor.untrusted"},
    "monitor.metric_catalog": set(),
    "monitor.clock": set(),
    "monitor.tasks": set(),
    "monitor.textfile": {"monitor.errors"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(name: str, path: Path) -> Iterator[str]:
    known = modules()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            candidates = [f"{module}.{alias.name}" for alias in node.names] + [module]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            # `from monitor.config import Settings` is an arrow to monitor.config; `from monitor import x` to x.
            if candidate in known and candidate != name:
                yield candidate
                break


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imported(name, path)) for name, path in modules().items()}


def _package(module: str) -> str:
    """monitor.store.repo -> monitor.store; a top-level module (monitor.meter) is its own package."""
    parts = module.split(".")
    if len(parts) > 2 or (module in modules() and modules()[module].name == "__init__.py"):
        return ".".join(parts[:2])
    return module


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that ends where it starts, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read() -> None:
    # A parser that read nothing would pass every test below.
    assert len(modules()) > 80
    assert "monitor.config" in graph()["monitor.daemon"] or any(
        m.startswith("monitor.config") for m in graph()["monitor.daemon"]
    )
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycle_between_modules() -> None:
    edges = {name: set(targets) for name, targets in graph().items()}
    # A package's __init__ that re-exports its modules is the package itself, not a cycle with them.
    for name, path in modules().items():
        if path.name == "__init__.py":
            edges[name] = {t for t in edges[name] if not t.startswith(name + ".")}
    assert _cycle(edges) is None


def test_no_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        source = _package(name)
        edges.setdefault(source, set()).update(_package(t) for t in targets if _package(t) != source)
    assert _cycle(edges) is None


def _outside(module: str, allowed: set[str]) -> set[str]:
    return {t for t in graph()[module] if t not in allowed}


@pytest.mark.parametrize("module", sorted(GROUND))
def test_ground_floor_imports_nothing_above_it(module: str) -> None:
    assert _outside(module, GROUND[module]) == set()


def test_config_imports_only_itself_and_the_ground_floor() -> None:
    config = {m for m in modules() if m == "monitor.config" or m.startswith("monitor.config.")}
    allowed = config | set(GROUND) | set(CATALOGUE)
    for module in sorted(config):
        assert _outside(module, allowed) == set(), module


def test_meter_imports_only_itself_and_the_ground_floor() -> None:
    meter = {m for m in modules() if m == "monitor.meter" or m.startswith("monitor.meter_")}
    assert meter, "the meter moved: update this test"
    for module in sorted(meter):
        assert _outside(module, meter | set(GROUND)) == set(), module


def test_checks_import_only_the_meter_config_and_ground_floor() -> None:
    meter = {m for m in modules() if m == "monitor.meter" or m.startswith("monitor.meter_")}
    config = {m for m in modules() if m == "monitor.config" or m.startswith("monitor.config.")}
    checks = {m for m in modules() if m == "monitor.checks" or m.startswith("monitor.checks_")}
    allowed = meter | config | checks | set(GROUND) | {"monitor.results"}
    for module in sorted(checks):
        assert _outside(module, allowed) == set(), module
