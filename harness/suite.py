"""Suite files: a study written down as TOML, one ``[[run]]`` table per ``python -m harness run``.

    [[run]]
    domain = "vision"
    models = ["vit", "resnet"]
    epochs = 30
    model_opt = {depth = 6}
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any

from .errors import USER_ERRORS, UsageError
from .sweep import resolve_tasks

# flags a suite's [[run]] table may set (TOML keys use underscores), and those the command line passes on
SUITE_KEYS = {"domain", "tasks", "models", "seeds", "seed_start", "size", "epochs", "steps", "batch_size", "lr", "weight_decay",
              "device", "backend", "precision", "task_opt", "model_opt", "deterministic", "download", "plugin",
              "compile", "params", "train_fraction", "channels_last", "data_on_device", "tune"}
PASSED_ON = ("out", "data_dir", "device", "quiet", "force", "download", "checkpoint_minutes", "plugin",
             "jobs", "executor", "ray_address", "cpus_per_cell", "gpus_per_cell", "ddp", "storage", "tune")  # where and how the cells run


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


def suite_plans(path: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[argparse.Namespace]:
    """Each [[run]] of the suite as the arguments of 'python -m harness run ...', with this command
    line's --out, --data-dir, --device, --quiet, --force ... passed on. ``parser`` raises a UsageError
    where a table's value is bad (``cli.TableParser``); that and unknown names fail here, before
    anything runs, naming the file and the table (the rest is checked when every run is planned)."""
    passed = {k: getattr(args, k) for k in PASSED_ON}
    plans = []
    for i, argv in enumerate(suite_runs(path), 1):
        try:
            run_args = parser.parse_args(["run", *argv])
            if run_args.domain != "all":
                resolve_tasks(run_args.domain, run_args.tasks)
        except USER_ERRORS as e:  # the parser raises: the message names the file and the table
            raise UsageError(f"--config {path}, [[run]] {i}: {e}") from None
        for key, value in passed.items():
            if key == "plugin":
                run_args.plugin = list(dict.fromkeys([*run_args.plugin, *value]))
            elif key in ("quiet", "force", "download", "ddp"):
                setattr(run_args, key, getattr(run_args, key) or value)
            elif value != parser.get_default(key):  # given on this command line: it wins
                setattr(run_args, key, value)
        plans.append(run_args)
    print(f"harness: suite {path} ({len(plans)} run(s))", file=sys.stderr)
    return plans
