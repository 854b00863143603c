"""A cell's code identity: what a change to the code that computes a cell changes.

A cell's configuration hash (``harness.config.resolve``) covers its settings and its data; this adds
the code: a fingerprint of every module that computes it, so that an old record is never taken for a
new cell after that code changed (the Decision Transformer's initialisation once changed under an
unchanged hash). The modules are the model's (its factory's module) and the task's, with everything
they import from the project (``zoo``, ``baselines``, ``tasks``; followed through imports at any depth,
also inside functions), and the harness modules that train and evaluate a cell (``CELL_MODULES``). Each
is read as its syntax tree without docstrings, so that a change of a comment or a docstring is no new
cell, and any change of what runs is.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

PROJECT = ("zoo", "baselines", "tasks")  # the packages whose code a model or a task may run
CELL_MODULES = ("harness.trainer", "harness.config", "harness.devices")  # the training loop, recipe, placement


@lru_cache(maxsize=None)
def _source(module: str) -> Path | None:
    """The file of ``module`` (None where it has none, or it cannot be found)."""
    loaded = sys.modules.get(module)
    path = getattr(loaded, "__file__", None)
    if path is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # a name imported from a module ('tasks.base.Batch'): no module
            spec = None
        path = spec.origin if spec is not None and spec.has_location else None
    return Path(path) if path and path.endswith(".py") else None


@lru_cache(maxsize=None)
def _tree(module: str) -> tuple[str, tuple[str, ...]]:
    """(the module's code without docstrings, dumped; the project modules it imports)."""
    path = _source(module)
    if path is None:
        return "", ()
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            imported += [base] + [f"{base}.{a.name}" for a in node.names]
    mine = tuple(sorted({m for m in imported if m.split(".")[0] in PROJECT and _source(m) is not None}))
    return ast.dump(tree, annotate_fields=False), mine


def modules_of(roots: tuple[str, ...]) -> list[str]:
    """``roots`` and every project module they import, at any depth, sorted."""
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += _tree(module)[1]
    return sorted(seen)


@lru_cache(maxsize=None)
def fingerprint(model_module: str, task_module: str) -> str:
    """The code identity of a cell of a model defined in ``model_module`` on a task defined in
    ``task_module``: a hash of every module that computes it (see the module docstring)."""
    digest = hashlib.sha256()
    for module in modules_of((model_module, task_module, *CELL_MODULES)):
        digest.update(module.encode() + b"\0" + _tree(module)[0].encode() + b"\0")
    return digest.hexdigest()[:16]


def forget() -> None:
    """Read the sources again (after a change to them within one process: the tests)."""
    for cached in (_source, _tree, fingerprint):
        cached.cache_clear()
