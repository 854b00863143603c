"""The layout README.md states ("Arrows point one way"): harness -> tasks -> (zoo, baselines) ->
zoo.core, no import loop even through imports inside functions, short functions, a thin command line
that alone parses arguments, and contracts between tasks and models declared, never probed."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "baselines", "tasks", "harness")
MAX_FUNCTION_LINES = 80
# what each layer may import from the project (a module may always import its own package)
ALLOWED = {"zoo.core": set(), "zoo": {"zoo.core"}, "baselines": {"zoo", "zoo.core"},
           "tasks": {"zoo", "zoo.core", "baselines"}, "harness": {"zoo", "zoo.core", "baselines", "tasks"}}


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``packages`` under ``root``."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its file (functions included)."""
    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in known:
                return ".".join(parts[:i])
        return None

    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {resolve(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            for alias in node.names:  # 'from . import speech' imports the module tasks.speech
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else resolve(base))
    return {t for t in targets if t and t != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    known = modules(root, packages)
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(module: str) -> str:
    return "zoo.core" if module.startswith("zoo.core") else module.split(".")[0]


def test_no_import_cycles_even_inside_functions():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    assert cycles(import_graph(ROOT)) == []


def test_arrows_point_one_way():
    wrong = [f"{m} imports {t}" for m, targets in import_graph(ROOT).items() for t in targets
             if layer(t) != layer(m) and layer(t) not in ALLOWED[layer(m)]]
    assert wrong == []


def test_the_core_imports_only_torch_and_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"torch", "zoo"}
    for path in (ROOT / "zoo" / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            assert all(n.split(".")[0] in allowed for n in names), f"{path.name} imports {names}"


def test_no_function_is_longer_than_80_lines():
    long = []
    for name, path in modules(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_the_command_line_is_the_parser_and_the_dispatch():
    assert len((ROOT / "harness" / "cli.py").read_text().splitlines()) < 250


def test_only_the_command_line_imports_argparse():
    """The grep anyone can run: past harness/cli.py and its argument helpers, options are typed values."""
    found = [f"{name}" for name, path in modules(ROOT).items()
             if any(isinstance(n, (ast.Import, ast.ImportFrom)) and "argparse" in
                    ([a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""])
                    for n in ast.walk(ast.parse(path.read_text())))]
    assert sorted(found) == ["harness.arguments", "harness.cli"]


def test_no_capability_probe_of_a_model_in_tasks_or_the_harness():
    """What a task kind needs of a model is a declared protocol (tasks/base.py), checked once when a
    cell is built; no getattr(model, ...) / hasattr(model, ...) probes."""
    probes = []
    for name, path in modules(ROOT, ("tasks", "harness")).items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in ("model", "net", "module")):
                probes.append(f"{name}:{node.lineno}")
    assert probes == []


def test_each_domain_has_its_own_task_package():
    assert {p.parent.name for p in (ROOT / "tasks").glob("*/__init__.py")} == {"vision", "language", "rl", "speech"}


def test_the_checks_find_a_loop_hidden_in_a_function(tmp_path):
    """The cycle check is not vacuous: a loop through an import inside a function is found."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from .b import g\n\ndef f():\n    return g()\n")
    (tmp_path / "pkg" / "b.py").write_text("def g():\n    from pkg import a\n    return a\n")
    (tmp_path / "pkg" / "c.py").write_text("from . import b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


@pytest.mark.parametrize("family", ["mlp", "ssm"])
def test_family_is_free_text(family, monkeypatch):
    import zoo.registry as registry
    from torch import nn
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    registry.register_model(f"toy_{family}", family=family, kinds="classification")(lambda spec: nn.Identity())
    assert registry.get_model_entry(f"toy_{family}").family == family
