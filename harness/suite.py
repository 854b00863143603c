"""Suite files: a study written down as TOML, one ``[[run]]`` table per ``python -m harness run``.

    [[run]]
    domain = "vision"
    models = ["vit", "resnet"]
    epochs = 30
    model_opt = {depth = 6}
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable

from .errors import USER_ERRORS, UsageError
from .options import RunOptions
from .plugins import load_plugins

# flags a suite's [[run]] table may set (TOML keys use underscores), and those the command line passes on
SUITE_KEYS = {"domain", "tasks", "models", "seeds", "seed_start", "size", "epochs", "steps", "batch_size", "lr", "weight_decay",
              "device", "backend", "precision", "task_opt", "model_opt", "deterministic", "download", "plugin",
              "compile", "params", "train_fraction", "channels_last", "data_on_device", "tune"}


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        suite = tomllib.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--config {path}: not UTF-8 text, as TOML must be (byte {e.start}: {e.reason})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path}: not valid TOML ({e})") from None
    runs = suite.get("run")
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"--config {path}: expected one or more [[run]] tables, each with a domain")
    return runs


def _flags(key: str, value: Any) -> list[str]:
    """One TOML key and value as command-line arguments."""
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else []
    if isinstance(value, dict):  # task_opt / model_opt tables
        return [a for k, v in value.items() for a in (flag, f"{k}={v}")]
    if isinstance(value, list):
        return [a for v in value for a in (flag, str(v))] if key == "plugin" else [flag, ",".join(map(str, value))]
    return [flag, str(value)]


def suite_runs(path: Path) -> list[list[str]]:
    """A suite file -> the argv of each of its [[run]] tables (after 'run')."""
    argvs = []
    for i, table in enumerate(_read(path), 1):
        unknown = sorted(set(table) - SUITE_KEYS)
        if unknown or "domain" not in table:
            problem = f"unknown key(s) {', '.join(unknown)}" if unknown else "no domain"
            raise UsageError(f"--config {path}: [[run]] {i} has {problem}; accepted: {', '.join(sorted(SUITE_KEYS))}")
        argvs.append([str(table["domain"])] + [a for k, v in table.items() if k != "domain" for a in _flags(k, v)])
    return argvs


def suite_options(path: Path, args: RunOptions, parse: Callable[[list[str]], RunOptions]) -> list[RunOptions]:
    """Each [[run]] of the suite as the options of 'python -m harness run ...' (``parse``: the command
    line's own parser, which raises a UsageError for a bad value), with this command line's --out,
    --data-dir, --device, --quiet, --force ... passed on. A bad value fails here, naming the file and
    the table; unknown names and the rest are checked when every run is planned, before any trains,
    and named so too (``sweep.run_sweeps``)."""
    defaults = parse([])
    tables = []
    for i, argv in enumerate(suite_runs(path), 1):
        try:
            table = parse(argv)
            load_plugins(list(table.plugin))
        except USER_ERRORS as e:  # the message names the file and the table
            raise UsageError(f"--config {path}, [[run]] {i}: {e}") from None
        tables.append(args.passed_on(table, defaults))
    return tables
