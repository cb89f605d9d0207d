"""The package's import graph, read from the source with ast: no cycles, and the layering of
the house (``../shared/notes/architecture.md``, the README's "Layout") where it is cheap to
check.

Cycles are checked over top-level imports (what runs at import time, ``TYPE_CHECKING``
blocks excluded); the layering over every import, function-level ones included, since a
lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

from moodwire.settings import REPO_ROOT

SRC = REPO_ROOT / "services"
# Third-party libraries of the pipeline that the serving model must never need.
PIPELINE_LIBRARIES = ("faust", "kafka", "aiokafka", "sqlalchemy", "psycopg2", "redis", "fastapi")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) for every module of moodwire."""
    found = {}
    for path in (SRC / "moodwire").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _ours(name: str) -> str | None:
    """The moodwire module an imported name lives in (the longest prefix that is one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, *, top_level: bool) -> tuple[set[str], set[str]]:
    """(moodwire modules, top-level names of other distributions) that ``module`` imports."""
    path, package = MODULES[module]
    here = module if package else module.rpartition(".")[0]
    ours: set[str] = set()
    others: set[str] = set()

    def add(target: str, names: Iterable[str]) -> None:
        if target.split(".")[0] != "moodwire":
            others.add(target.split(".")[0])
            return
        for name in names:
            # `from moodwire.model import artifact` imports the submodule, else the package.
            found = f"{target}.{name}" if f"{target}.{name}" in MODULES else _ours(target)
            if found:
                ours.add(found)

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(alias.name, [""])
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against this module's package
                    base = here
                    for _ in range(node.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                add(target, [a.name for a in node.names])
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                if not top_level:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                # Run at import time when at module level: their bodies count as top level.
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif not top_level:
                visit([n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt)])

    visit(ast.parse(path.read_text(), str(path)).body)
    ours.discard(module)
    ours.discard("")
    return ours, others


TOP_LEVEL = {m: _imports(m, top_level=True)[0] for m in MODULES}
EVERY = {m: _imports(m, top_level=False) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_walk_sees_the_package_and_its_imports() -> None:
    # A walk that found nothing would make every check below pass.
    assert {"moodwire.records", "moodwire.model.engine", "moodwire.training.train"} <= set(MODULES)
    assert "moodwire.model.engine" in TOP_LEVEL["moodwire.training.train"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_moodwires_modules() -> None:
    assert _cycles(TOP_LEVEL) == []


@pytest.mark.parametrize("package", ["moodwire.model", "moodwire.training"])
def test_model_and_training_import_nothing_of_the_pipeline(package: str) -> None:
    # Serving is usable alone; training adds only itself on top of it.
    # The engine takes its settings as arguments; training may read where the data is.
    allowed: tuple[str, ...] = ("moodwire.model", "moodwire.labels", "moodwire.logs")
    if package == "moodwire.training":
        allowed += ("moodwire.training", "moodwire.settings")
    for module in (m for m in MODULES if _in(m, package)):
        ours, others = EVERY[module]
        assert sorted(m for m in ours if not _in(m, *allowed)) == [], module
        assert sorted(set(others) & set(PIPELINE_LIBRARIES)) == [], module


def test_serving_never_imports_training_and_only_the_cli_does() -> None:
    importers = sorted(
        m
        for m, (ours, _) in EVERY.items()
        if not _in(m, "moodwire.training") and any(_in(o, "moodwire.training") for o in ours)
    )
    assert all(_in(m, "moodwire.cli") for m in importers), importers


def test_records_imports_neither_the_model_nor_the_pipeline() -> None:
    ours, _ = EVERY["moodwire.records"]
    assert not any(_in(m, "moodwire.model") for m in ours)
    assert ours <= {"moodwire.settings", "moodwire.labels", "moodwire.logs"}, sorted(ours)


def test_only_the_cli_imports_the_stream_processor() -> None:
    # Replay, rescore, the API and alerts share the sinks and the scoring helpers, not
    # the Faust app (which would pull in aiokafka and the worker's batch step).
    importers = sorted(
        m
        for m, (ours, _) in EVERY.items()
        if not _in(m, "moodwire.process", "moodwire.cli")
        and any(_in(o, "moodwire.process") for o in ours)
    )
    assert importers == []


def test_settings_import_nothing_of_ours() -> None:
    assert EVERY["moodwire.settings"][0] == set()


def test_the_demo_is_imported_only_by_the_cli() -> None:
    importers = sorted(
        m
        for m, (ours, _) in EVERY.items()
        if not _in(m, "moodwire.demo") and any(_in(o, "moodwire.demo") for o in ours)
    )
    assert importers and all(_in(m, "moodwire.cli") for m in importers), importers
