"""The shape of the code: no import circle inside zwz_ray, no file too long to read in one sitting.

Imports are read from the source (``ast``), every one of them: module level and inside functions, since
a function-level import closes a circle just as well, only later. ``from zwz_ray.x import y`` counts as
importing ``zwz_ray.x.y`` when ``y`` is a submodule and ``zwz_ray.x`` (its ``__init__``) otherwise; imports
under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "zwz_ray"
MAX_LINES = 400
JOB_FACADES = ("zwz_ray.synth", "zwz_ray.train", "zwz_ray.eval")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((ROOT / PACKAGE).rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def imports_of(name: str, modules: dict[str, Path] = MODULES) -> Iterator[tuple[str, int]]:
    """(imported zwz_ray module, line) for every import statement of module ``name``."""
    path = modules[name]
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE and alias.name in modules:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules else base), node.lineno


@functools.cache
def import_graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for name in MODULES:
        edges = graph.setdefault(name, {})
        for target, line in imports_of(name):
            if target != name and target in MODULES:
                edges.setdefault(target, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return groups


def one_cycle(graph: dict[str, dict[str, int]], group: list[str]) -> list[str]:
    """A shortest circle through the group's first module, staying inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in graph[node]:
                if child == start:
                    return [*paths[node], start]
                if child in members and child not in paths:
                    paths[child] = [*paths[node], child]
                    nxt.append(child)
        frontier = nxt
    return group


def describe(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    steps = [f"{a} ({MODULES[a].relative_to(ROOT)}:{graph[a][b]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join([*steps, cycle[-1]])


@functools.cache
def cycles() -> list[tuple[list[str], str]]:
    graph = import_graph()
    return [(group, describe(graph, one_cycle(graph, group))) for group in strongly_connected(graph)]


def test_the_import_reader_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / PACKAGE / "job"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from zwz_ray.job.config import Config\n")
    (pkg / "config.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from zwz_ray.job import run\n")
    (pkg / "run.py").write_text("from . import config\n\ndef go():\n    from zwz_ray.job import worker, Config\n")
    (pkg / "worker.py").write_text("import zwz_ray.job.config\nfrom ..job.run import go\n")
    modules = {".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p for p in pkg.glob("*.py")}
    seen = {name: sorted({target for target, _ in imports_of(name, modules)}) for name in modules}
    assert seen == {"zwz_ray.job": ["zwz_ray.job.config"], "zwz_ray.job.config": [],
                    "zwz_ray.job.run": ["zwz_ray.job", "zwz_ray.job.config", "zwz_ray.job.worker"],
                    "zwz_ray.job.worker": ["zwz_ray.job.config", "zwz_ray.job.run"]}
    assert strongly_connected({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_circle_inside_zwz_ray():
    found = cycles()
    assert not found, "import circles (module (file:line of the import) -> ...):\n" + "\n".join(d for _, d in found)


def test_the_job_facades_are_in_no_circle():
    """``zwz_ray.synth`` / ``train`` / ``eval`` import their config and run modules only; nothing they reach
    imports them back."""
    tangled = [d for group, d in cycles() if set(group) & set(JOB_FACADES)]
    assert not tangled, "\n".join(tangled)


def _source_files() -> list[Path]:
    return sorted([*(ROOT / PACKAGE).rglob("*.py"), *(ROOT / "pipelines").rglob("*.py")])


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_400_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_LINES}): split it by idea"
