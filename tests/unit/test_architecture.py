"""The layering of docs/ARCHITECTURE.md, checked on the source: who may import what, no
import cycles, no module reading another's private names.

Every import counts, those inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"vowvault": ROOT / "src" / "vowvault", "tasks": ROOT / "tasks",
            "flows": ROOT / "flows", "deployments": ROOT / "deployments",
            "blocks": ROOT / "blocks"}


def _modules() -> dict[str, Path]:
    found = {}
    for top, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            if "migrations" in path.parts and "versions" in path.parts:
                continue
            rel = path.relative_to(base).with_suffix("")
            parts = [top, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name is in (None: not ours)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


@functools.cache
def _imports(module: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import of a module."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full, None, node.lineno) if full in MODULES
                           else (base, a.name, node.lineno))
    return out


@functools.cache
def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for target, _name, _line in _imports(module):
            found = _resolve(target)
            if found is not None and found != module:
                graph[module].add(found)
    return graph


def _external(module: str) -> set[str]:
    return {target.split(".")[0] for target, _n, _l in _imports(module)
            if _resolve(target) is None}


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


DATA_PLANE = ("vowvault.repository", "vowvault.codec", "vowvault.storage", "vowvault.sources")
FACES = ("vowvault.cli", "blocks", "tasks", "flows", "deployments")


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, *DATA_PLANE)))
def test_the_data_plane_knows_no_catalog_engine_or_face(module: str) -> None:
    banned_ours = ("vowvault.catalog", "vowvault.engine", *FACES)
    ours = {t for t in _graph()[module] if _within(t, *banned_ours)}
    theirs = _external(module) & {"sqlalchemy", "alembic", "prefect", "typer", "rich"}
    assert not ours and not theirs, f"{module} imports {sorted(ours | theirs)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _within(m, "vowvault")
                                          and not _within(m, *FACES)))
def test_the_core_imports_no_orchestrator_or_cli_framework(module: str) -> None:
    ours = {t for t in _graph()[module] if _within(t, *FACES)}
    theirs = _external(module) & {"prefect", "typer", "rich"}
    assert not ours and not theirs, f"{module} imports {sorted(ours | theirs)}"


def test_domain_and_catalog_stay_below_the_engine() -> None:
    graph = _graph()
    assert {t for t in graph["vowvault.domain"] if t.startswith("vowvault")} == set()
    for module in (m for m in MODULES if _within(m, "vowvault.catalog")):
        bad = {t for t in graph[module] if _within(t, "vowvault.engine", "vowvault.storage",
                                                   "vowvault.repository", "vowvault.sources")}
        assert not bad, f"{module} imports {sorted(bad)}"


def test_tasks_holds_prefect_tasks_only() -> None:
    for module, path in MODULES.items():
        if not module.startswith("tasks.") or module == "tasks.common":
            continue
        assert "@task" in path.read_text(), f"{module} defines no Prefect task"


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    import sys

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_module_reads_another_modules_private_names() -> None:
    problems = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for target, name, line in _imports(module):
            found = _resolve(target)
            if found is None or found == module:
                continue
            if name is not None and name.startswith("_") and not name.startswith("__"):
                problems.append(f"{module}:{line} imports {found}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for a in node.names:
                    full = (f"{node.module}.{a.name}" if isinstance(node, ast.ImportFrom)
                            and node.module else a.name)
                    if full in MODULES and full != module:
                        aliases[a.asname or a.name.split(".")[0]] = full
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in aliases and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                problems.append(f"{module}:{node.lineno} reads "
                                f"{aliases[node.value.id]}.{node.attr}")
    assert problems == []
