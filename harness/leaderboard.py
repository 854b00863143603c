"""Cells -> pandas -> results/leaderboard_<domain>.csv (+ .md).

One row per (task, model, size): the headline test metric of the last checkpoint averaged over
seeds. The columns (timm's naming style: lower case, units in the name):

======================  =====================================================================
domain, task            where the row belongs
model, family, size     the registry name, 'transformer' or 'baseline', the size preset
rank                    1 = best on this task (by metric_mean; ties share a rank)
metric                  the headline metric's name (e.g. top1 = test accuracy)
higher_is_better        the metric's direction
metric_mean, _std       over seeds (std with ddof=1; empty for one seed)
n_seeds, seeds          how many seeds, and which
param_count             trainable parameters
train_time_s            mean wall time of training (evaluation excluded)
train_samples_per_sec   mean training throughput
steps, epochs           the budget every model of the task got (epochs: steps / steps between
                        validations, which is a pass over the data where the task has epochs)
batch_size              the same for every model of the task
lr, weight_decay        the optimiser settings of this model
device, device_name     cpu/cuda and the processor or GPU
backend, precision      attention backend (sdpa/math) and fp32/bf16
torch_version           PyTorch that ran
git_commit              code version ('+dirty': uncommitted changes)
config_hash             hash of the resolved configuration (identical = comparable)
date                    when the last seed finished (UTC)
test_<name>             every other metric the task reports (e.g. test_top5, test_bpc,
                        test_long_exact_match, test_return_mean), mean over seeds
======================  =====================================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from .records import atomic_write_text

KEY = ["domain", "task", "model", "size"]
COLUMNS = ["domain", "task", "model", "family", "size", "rank", "metric", "higher_is_better", "metric_mean", "metric_std", "n_seeds",
           "seeds", "param_count", "train_time_s", "train_samples_per_sec", "steps", "epochs", "batch_size", "lr",
           "weight_decay", "device", "device_name", "backend", "precision", "torch_version", "git_commit",
           "config_hash", "date"]
SHOWN = ["task", "rank", "model", "family", "size", "metric", "metric_mean", "metric_std", "n_seeds",
         "param_count", "train_time_s"]


def latest_config(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (domain, task, model, size), only the records of the configuration that finished last, so
    that seeds run with other settings (another budget, backend, ...) are never averaged together."""
    latest: dict[tuple, tuple[str, str]] = {}
    for r in records:
        key = tuple(r[k] for k in KEY)
        if key not in latest or r["finished"] > latest[key][0]:
            latest[key] = (r["finished"], r["config_hash"])
    return [r for r in records if r["config_hash"] == latest[tuple(r[k] for k in KEY)][1]]


def aggregate(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (domain, task, model, size) from the successful cell records (latest config)."""
    rows = []
    for r in latest_config([r for r in records if r.get("status") == "ok"]):
        cfg = r["config"]
        rows.append({**{k: r[k] for k in KEY}, "family": r["family"], "metric": r["metric"],
                     "value": r["metric_value"], "higher_is_better": r["higher_is_better"], "seed": r["seed"],
                     "param_count": r["param_count"], "train_time_s": r["train_time_s"],
                     "train_samples_per_sec": r["train_samples_per_sec"], "steps": cfg["total_steps"],
                     "epochs": round(cfg["epochs"], 3),
                     "batch_size": cfg["batch_size"], "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                     "device": r["device"], "device_name": r["device_name"], "backend": r["backend"],
                     "precision": r["precision"], "torch_version": r["torch_version"],
                     "git_commit": r["git_commit"], "config_hash": r["config_hash"], "date": r["finished"],
                     **{f"test_{k}": v for k, v in r["test"].items() if k != r["metric"]}})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    out = df.groupby(KEY, sort=False).agg(
        family=("family", "first"), metric=("metric", "first"), higher_is_better=("higher_is_better", "first"),
        metric_mean=("value", "mean"), metric_std=("value", "std"), n_seeds=("seed", "nunique"),
        seeds=("seed", lambda s: " ".join(str(v) for v in sorted(s))), param_count=("param_count", "first"),
        train_time_s=("train_time_s", "mean"), train_samples_per_sec=("train_samples_per_sec", "mean"),
        **{c: (c, "last") for c in ["steps", "epochs", "batch_size", "lr", "weight_decay", "device", "device_name",
                                    "backend", "precision", "torch_version", "git_commit", "config_hash"]},
        date=("date", "max"),
        **{c: (c, "mean") for c in df.columns if c.startswith("test_")},
    ).reset_index()
    return rank(out)


def rank(df: pd.DataFrame) -> pd.DataFrame:
    """Rank models within each task, best first, and order the rows so."""
    if df.empty:
        return df.reindex(columns=COLUMNS)
    signed = df["metric_mean"].where(df["higher_is_better"].astype(bool), -df["metric_mean"])
    df = df.assign(rank=signed.groupby([df["domain"], df["task"]]).rank(ascending=False, method="min").astype(int))
    extra = sorted(c for c in df.columns if c.startswith("test_"))
    return df.sort_values(["domain", "task", "rank", "model"]).reindex(columns=COLUMNS + extra).reset_index(drop=True)


def replace_rows(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``existing`` rows whose (domain, task, model, size) are not in ``new``, plus ``new``."""
    if existing.empty or not set(KEY) <= set(existing.columns):
        return new
    keys = set(map(tuple, new[KEY].astype(str).values))
    keep = existing[[tuple(row) not in keys for row in existing[KEY].astype(str).values]]
    return pd.concat([keep, new], ignore_index=True) if not keep.empty else new


def merge(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard after a run: its cells' rows replaced, the others kept, all re-ranked."""
    return rank(replace_rows(existing, new))


def read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    return pd.read_csv(path, dtype={"seeds": str})


def write(df: pd.DataFrame, path: Path) -> None:
    """The CSV and a Markdown twin (``.md``), both written atomically."""
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(path.with_suffix(".md"), to_markdown(df) + "\n")


def _fmt(value: Any, column: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if column == "train_time_s":
            return f"{value:.1f}"
        return f"{value:.4f}"
    if column == "param_count":
        return f"{int(value):,}"
    return str(value)


def to_markdown(df: pd.DataFrame, columns: list[str] = SHOWN) -> str:
    cols = [c for c in columns if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], c) for c in cols) + " |")
    return "\n".join(lines)


def to_text(df: pd.DataFrame, columns: list[str] = SHOWN) -> str:
    """A fixed-width table for the terminal."""
    cols = [c for c in columns if c in df.columns]
    cells = [[_fmt(row[c], c) for c in cols] for _, row in df.iterrows()]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i > 0 and _numeric(cols[i]) else v.ljust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _numeric(column: str) -> bool:
    return column in {"rank", "metric_mean", "metric_std", "n_seeds", "param_count", "train_time_s"}


def tables(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The row tables that tasks attach to records (``examples["tables"]``), one frame per name,
    each row keyed by the cell it came from."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in latest_config([r for r in records if r.get("status") == "ok"]):
        for name, table in (r.get("examples") or {}).get("tables", {}).items():
            rows.setdefault(name, []).extend({**{k: r[k] for k in KEY}, "seed": r["seed"], **row} for row in table)
    return {name: pd.DataFrame(table) for name, table in rows.items()}


def merge_table(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    return replace_rows(existing, new).sort_values(KEY + ["seed"], kind="stable")


def write_table(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
