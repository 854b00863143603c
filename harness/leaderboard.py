"""Cells -> pandas -> results/leaderboard_<domain>.csv (+ .md).

One row per (task, model, size, tuning): the headline test metric of the last checkpoint averaged over
seeds, with its uncertainty. The columns (timm's naming style: lower case, units in the name):

======================  =====================================================================
domain, task            where the row belongs
model, family, size     the registry name, its family ('transformer', 'ssm', 'baseline', ...: what
                        the model declares), the size label (preset or grid point)
tuning                  how lr, weight decay, warm-up and dropout were chosen: 'default' (the
                        model's registered defaults), or the sampler and its trials per model,
                        e.g. 'tpe-8' (``python -m harness tune``; the record keeps the study)
rank                    1 = best on this task among the rows of the same size (grid point) and
                        tuning (by metric_mean; equal means share a rank), and 1 for every row that
                        the paired test cannot tell from that leader; a plain integer in the CSV
rank_tie                True when the paired test (``stats.compare``: seeds and test items; without
                        per-item outcomes, Welch's t over seeds, both need n >= 2) finds no
                        difference at 5% between this row and the leader, Holm-adjusted over the
                        group's tests against the leader (``verdicts.leader_ties``; the leader
                        itself where some row ties with it). The Markdown and terminal tables show
                        such a rank as "=1"
metric                  the headline metric's name (e.g. top1 = test accuracy)
higher_is_better        the metric's direction
metric_mean, _std       over seeds (std with ddof=1; empty for one seed)
metric_ci_low, _high    the 95% interval of the metric: from the per-item outcomes where the
                        records keep them (``stats.interval``: seed and test-item variance; for
                        outcomes that are means over items, at least the Wilson interval of the
                        mean on the range of values the task's items take, so a row at the
                        ceiling, 100% or every episode at the best return, is never a point);
                        else Student t over seeds, t(0.975, n-1) * std / sqrt(n), empty for one seed
metric_ci95             half the interval's width
val_metric_mean         the headline metric on the validation split at the end of training, mean
                        over seeds: what ``verdicts`` chooses the best model of a family on
n_seeds, seeds          how many seeds, and which (the same seeds as the mean, interval and ties)
param_count             trainable parameters
params_target           the --params target the model was fitted to (empty: the size preset)
train_fraction          the nested, stratified share of the training split (--train-fraction; 1: all)
train_size              training items (after train_fraction); empty for older records
train_samples           training samples seen (mean over seeds): train_size x epochs, or steps x batch
flops_per_sample        forward FLOPs of one sample, mean over seeds (empty: not recorded)
train_flops_per_sample  FLOPs of one training sample (forward + backward), mean over seeds
train_time_s            mean wall time of training (evaluation excluded)
train_samples_per_sec   mean training throughput
mfu                     model FLOPs utilisation of a CUDA cell: train_flops_per_sample x throughput / the
                        GPU's dense bf16 peak (harness.measure.bf16_peak); empty on CPU or an unknown GPU
infer_samples_per_sec   mean evaluation (inference) throughput (empty: not recorded)
peak_mem_mb             mean peak memory of the cell in MB: the CUDA allocator's peak on GPU, the
                        process's peak resident set on CPU (empty: not recorded)
time_to_target_s        mean training seconds until the validation metric first reached the
                        task's target; empty unless every seed recorded a time (a seed that never
                        reached the target, or an older record without the field, empties it)
steps, epochs           the budget every model of the task got (epochs: steps / steps between
                        validations, which is a pass over the data where the task has epochs)
batch_size              the same for every model of the task
lr, weight_decay        the optimiser settings of this model
warmup_frac, dropout    the share of steps with a linear warm-up; the dropout where it was set
                        (tuned or --model-opt; empty: the size preset's)
device, device_name     cpu/cuda and the processor or GPU
num_threads             torch's intra-op threads (CPU float sums differ with it; '1/2' where seeds differ)
backend, precision      attention backend (sdpa/math) and fp32/bf16
torch_version           PyTorch that ran
git_commit              code version ('+dirty': uncommitted changes)
config_hash             hash of the resolved configuration (identical = comparable)
date                    when the last seed finished (UTC)
test_<name>             every other metric the task reports (e.g. test_top5, test_bpc,
                        test_long_exact_match, test_return_mean), mean over seeds
======================  =====================================================================

The interval columns and ``rank``/``rank_tie`` are derived by :func:`rank` from the rows' per-item
outcomes where given, else from metric_mean, metric_std and n_seeds, so leaderboards written before
these columns existed gain them when they are read and merged again. A row is built from the records
of one configuration (``records.latest_config``): its mean, interval, seeds and ties all come from
the same seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from tasks import get_task_class
from zoo.registry import RegistryError

from . import stats, verdicts
from .records import DEFAULT_TUNING, KEY, atomic_write_text, key_of, latest_config
from .schema import Record, finite, number, records_of
from .verdicts import Outcomes
COST = ["flops_per_sample", "train_flops_per_sample", "infer_samples_per_sec", "peak_mem_mb", "time_to_target_s", "mfu"]
COLUMNS = ["domain", "task", "model", "family", "size", "tuning", "rank", "rank_tie", "metric", "higher_is_better",
           "metric_mean", "metric_std", "metric_ci95", "metric_ci_low", "metric_ci_high", "val_metric_mean", "n_seeds",
           "seeds",
           "param_count", "params_target", "train_fraction", "train_size", "train_samples", "flops_per_sample", "train_flops_per_sample", "train_time_s", "train_samples_per_sec",
           "mfu", "infer_samples_per_sec", "peak_mem_mb", "time_to_target_s", "steps", "epochs", "batch_size", "lr",
           "weight_decay", "warmup_frac", "dropout", "device", "device_name", "num_threads", "backend", "precision", "torch_version", "git_commit",
           "config_hash", "date"]
SHOWN = ["task", "rank", "model", "family", "size", "tuning", "metric", "metric_mean", "metric_std", "metric_ci95", "n_seeds",
         "param_count", "train_time_s"]
TIE_NOTE = ("A rank shown as =1: the paired test (over seeds and test items, Holm-adjusted over the tests against "
            "the leader) cannot tell the model from the leader at the 5% level, a statistical tie with the best.")


def _final_validation(record: Record) -> float:
    """The headline metric on the validation split at the end of training (the last history entry)."""
    return number(record.history[-1].get(f"val_{record.metric}")) if record.history else math.nan


def _threads(values: pd.Series) -> str:
    found = sorted({int(v) for v in values if finite(v)})
    return "/".join(map(str, found))


def _mean_all(values: pd.Series) -> float:
    """The mean, or NaN as soon as one value is missing (time_to_target_s: every seed must reach it)."""
    return float(values.mean()) if values.notna().all() else math.nan


def aggregate(records: list[dict[str, Any]], outcomes: Outcomes | None = None) -> pd.DataFrame:
    """One row per (domain, task, model, size) from the successful cell records (latest config);
    with their per-item ``outcomes`` (``records.load_outcomes``), intervals and ties from them."""
    rows = []
    for r in latest_config([r for r in records_of(records) if r.status == "ok"]):
        cfg = r.config
        rows.append({**dict(zip(KEY, key_of(r))), "family": r.family, "metric": r.metric,
                     "value": r.metric_value, "higher_is_better": r.higher_is_better, "seed": r.seed,
                     "val": _final_validation(r), "num_threads": r.num_threads,
                     "param_count": r.param_count, "train_time_s": r.train_time_s,
                     "params_target": number(r.params_target), "train_fraction": number(r.train_fraction),
                     "train_size": number(r.train_size), "train_samples": number(r.train_samples),
                     "train_samples_per_sec": r.train_samples_per_sec, "steps": cfg["total_steps"],
                     "epochs": round(cfg["epochs"], 3),
                     "batch_size": cfg["batch_size"], "lr": cfg["lr"], "weight_decay": cfg["weight_decay"],
                     "warmup_frac": cfg.get("warmup_frac"), "dropout": number((cfg.get("model_options") or {}).get("dropout")),
                     "device": r.device, "device_name": r.device_name, "backend": r.backend,
                     "precision": r.precision, "torch_version": r.torch_version,
                     "git_commit": r.git_commit, "config_hash": r.config_hash, "date": r.finished,
                     **{c: number(r[c]) for c in COST},
                     **{f"test_{k}": v for k, v in r.test.items() if k != r.metric}})
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows)
    out = df.groupby(KEY, sort=False).agg(
        family=("family", "first"), metric=("metric", "first"), higher_is_better=("higher_is_better", "first"),
        metric_mean=("value", "mean"), metric_std=("value", "std"), val_metric_mean=("val", "mean"),
        n_seeds=("seed", "nunique"), num_threads=("num_threads", _threads),
        seeds=("seed", lambda s: " ".join(str(v) for v in sorted(s))), param_count=("param_count", "first"),
        params_target=("params_target", "first"), train_fraction=("train_fraction", "first"),
        train_size=("train_size", "first"), train_samples=("train_samples", "mean"),
        train_time_s=("train_time_s", "mean"), train_samples_per_sec=("train_samples_per_sec", "mean"),
        **{c: (c, "mean") for c in COST if c != "time_to_target_s"},
        time_to_target_s=("time_to_target_s", _mean_all),
        **{c: (c, "last") for c in ["steps", "epochs", "batch_size", "lr", "weight_decay", "warmup_frac", "dropout",
                                    "device", "device_name",
                                    "backend", "precision", "torch_version", "git_commit", "config_hash"]},
        date=("date", "max"),
        **{c: (c, "mean") for c in df.columns if c.startswith("test_")},
    ).reset_index()
    return rank(out, outcomes)


def ci95(std: Any, n: Any) -> float:
    """Half-width of the 95% confidence interval of a mean of ``n`` values with sample std ``std``
    (Student t with n - 1 degrees of freedom); NaN when n < 2 or std is unknown."""
    std, n = number(std), number(n)
    if not (n >= 2) or not math.isfinite(std):
        return math.nan
    return float(student_t.ppf(0.975, n - 1) * std / math.sqrt(n))


def with_intervals(df: pd.DataFrame, outcomes: Outcomes | None = None) -> pd.DataFrame:
    """metric_ci95/_low/_high: from a row's per-item outcomes where there are some (``stats.interval``:
    seeds and test items, at least the Wilson interval on the range of the task's item values, so
    never a point at a ceiling); else Student t over seeds from metric_mean, metric_std and n_seeds
    (empty for one seed)."""
    outcomes = outcomes or {}
    bounds = verdicts.task_bounds(outcomes)
    mean = pd.to_numeric(df["metric_mean"], errors="coerce")
    low, high = [], []
    for key, m, std, n in zip(df[KEY].itertuples(index=False, name=None), mean, df["metric_std"], df["n_seeds"]):
        if key in outcomes:
            result = stats.interval(outcomes[key], bounds=verdicts.bounds_of(outcomes[key], bounds.get(key[:2])))
        else:
            half = ci95(std, n)
            result = (m - half, m + half)
        low.append(result[0])
        high.append(result[1])
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return df.assign(metric_ci95=(high - low) / 2, metric_ci_low=low, metric_ci_high=high)


def rank(df: pd.DataFrame, outcomes: Outcomes | None = None) -> pd.DataFrame:
    """Rank models within each task, size (grid point) and tuning, best first, mark the rows that the
    paired test cannot tell from the leader (``verdicts.leader_ties``: they share rank 1), and order
    the rows so."""
    if df.empty:
        return df.reindex(columns=COLUMNS)
    outcomes = outcomes or {}
    if "tuning" not in df.columns:  # a leaderboard written before tuning existed: every row had the defaults
        df = df.assign(tuning=DEFAULT_TUNING)
    df = df.assign(tuning=df["tuning"].fillna(DEFAULT_TUNING))
    df = with_intervals(df, outcomes)
    signed = df["metric_mean"].where(df["higher_is_better"].astype(bool), -df["metric_mean"])
    board = [df["domain"], df["task"], df["size"], df["tuning"]]  # rows of one size, grid point and tuning compete
    df = df.assign(rank=signed.groupby(board).rank(ascending=False, method="min").astype(int))
    tie = pd.Series(False, index=df.index)
    for _, group in df.groupby(["domain", "task", "size", "tuning"], sort=False):
        tie.update(verdicts.leader_ties(group, outcomes))
    df = df.assign(rank_tie=tie.astype(bool), rank=df["rank"].where(~tie.astype(bool), 1), _order=-signed)
    extra = sorted(c for c in df.columns if c.startswith("test_"))
    return df.sort_values(["domain", "task", "tuning", "size", "_order", "model"]).reindex(
        columns=COLUMNS + extra).reset_index(drop=True)


def replace_rows(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``existing`` rows whose (domain, task, model, size, tuning) are not in ``new``, plus ``new``."""
    if existing.empty or not set(KEY) <= set(existing.columns):
        return new
    keys = set(map(tuple, new[KEY].astype(str).values))
    keep = existing[[tuple(row) not in keys for row in existing[KEY].astype(str).values]]
    return pd.concat([keep, new], ignore_index=True) if not keep.empty else new


def merge(existing: pd.DataFrame, new: pd.DataFrame, outcomes: Outcomes | None = None) -> pd.DataFrame:
    """The leaderboard after a run: its cells' rows replaced, the others kept, all re-ranked."""
    return rank(replace_rows(existing, new), outcomes)


class DamagedFile(ValueError):
    """A results CSV that cannot be read back (malformed, binary, empty, or with incomplete rows)."""


def read_csv(path: Path) -> pd.DataFrame:
    """A results CSV (an empty frame where there is none); DamagedFile where it cannot be parsed."""
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    try:
        df = pd.read_csv(path, dtype={"seeds": str})
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as e:  # EmptyDataError is a ValueError
        raise DamagedFile(" ".join(str(e).split()) or type(e).__name__) from None
    if "size" in df.columns and "tuning" not in df.columns:  # written before tuning: every row had the defaults
        df.insert(df.columns.get_loc("size") + 1, "tuning", DEFAULT_TUNING)
    return df


def shown_configs(out: Path) -> dict[tuple, str]:
    """Per row of the leaderboards under ``out`` (those that can be read): the configuration it shows
    (its ``config_hash``), which a rebuild keeps showing."""
    chosen: dict[tuple, str] = {}
    for path in sorted(Path(out).glob("leaderboard_*.csv")):
        try:
            df = read_leaderboard(path)
        except DamagedFile:
            continue
        if "config_hash" in df.columns:
            chosen.update({tuple(map(str, key)): str(h) for key, h in
                           zip(df[KEY].itertuples(index=False, name=None), df["config_hash"])})
    return chosen


def current(found: list[tuple[Path, dict[str, Any]]], chosen: dict[tuple, str]) -> list[tuple[Path, dict[str, Any]]]:
    """The successful records each leaderboard row is built from: per (domain, task, model, size,
    tuning), those of the configuration ``chosen`` names where records of it exist (the one a run just
    ran, or the one its leaderboard shows), else those of the configuration that finished last. One
    configuration per row, so its mean, interval, seeds, ties and verdicts come from the same seeds."""
    ok = [(p, r) for p, r in found if r.get("status") == "ok"]
    have = {(tuple(map(str, key_of(r))), r["config_hash"]) for _, r in ok}
    picks = {key: h for key, h in chosen.items() if (key, h) in have}
    latest = {id(r) for r in latest_config([r for _, r in ok if tuple(map(str, key_of(r))) not in picks])}
    return [(p, r) for p, r in ok if picks.get(tuple(map(str, key_of(r)))) == r["config_hash"] or id(r) in latest]


def read_leaderboard(path: Path) -> pd.DataFrame:
    """A leaderboard CSV; one written before some columns existed reads fine (they are missing).
    DamagedFile where it cannot be parsed, lacks the identity columns, or has an incomplete row (a
    truncated write)."""
    df = read_csv(path)
    needed = [*KEY, "metric", "metric_mean", "n_seeds"]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DamagedFile(f"no column {', '.join(missing)}")
    incomplete = df[needed].isna().any(axis=1)
    if incomplete.any():
        raise DamagedFile(f"row {int(incomplete.to_numpy().argmax()) + 2} is incomplete")
    return df


def write(df: pd.DataFrame, path: Path) -> None:
    """The CSV and a Markdown twin (``.md``), both written atomically."""
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
    md = to_markdown(df)
    if has_ties(df):
        md += "\n\n" + TIE_NOTE
    atomic_write_text(path.with_suffix(".md"), md + "\n")


def has_ties(df: pd.DataFrame) -> bool:
    return "rank_tie" in df.columns and bool(df["rank_tie"].map(_is_true).any())


def _is_true(value: Any) -> bool:
    return value is True or value is np.True_ or (isinstance(value, str) and value.lower() == "true")


def _fmt(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if column in ("train_time_s", "time_to_target_s", "peak_mem_mb"):
            return f"{value:.1f}"
        if column in ("flops_per_sample", "train_flops_per_sample"):
            return f"{value:.3g}"
        if column == "infer_samples_per_sec" or column == "train_samples_per_sec":
            return f"{value:,.0f}"
        return f"{value:.4f}"
    if column == "param_count":
        return f"{int(value):,}"
    return str(value)


def _cell(row: pd.Series, column: str) -> str:
    """One table cell; a rank tied with another model's interval is shown as '=N'."""
    text = _fmt(row[column], column)
    if column == "rank" and _is_true(row.get("rank_tie")):
        return "=" + text
    return text


def task_metric_columns(df: pd.DataFrame) -> list[str]:
    """The ``test_<metric>`` columns that the rows' tasks show beside the headline
    (``TaskReport.leaderboard_metrics``, e.g. offline RL's controllability)."""
    columns: list[str] = []
    for task in (df["task"].unique() if "task" in df.columns else []):
        try:
            names = get_task_class(task).report.leaderboard_metrics
        except RegistryError:  # a record of a task this process does not register (an unloaded plugin's)
            continue
        columns += [f"test_{m}" for m in names if f"test_{m}" in df.columns and f"test_{m}" not in columns]
    return columns


def shown(df: pd.DataFrame) -> list[str]:
    """SHOWN, with the tasks' own leaderboard metrics after the seed count."""
    at = SHOWN.index("n_seeds") + 1
    return SHOWN[:at] + task_metric_columns(df) + SHOWN[at:]


def to_markdown(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    cols = [c for c in (shown(df) if columns is None else columns) if c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(row, c) for c in cols) + " |")
    return "\n".join(lines)


def to_text(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A fixed-width table for the terminal."""
    cols = [c for c in (shown(df) if columns is None else columns) if c in df.columns]
    cells = [[_cell(row, c) for c in cols] for _, row in df.iterrows()]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i > 0 and _numeric(cols[i]) else v.ljust(w)  # noqa: E731
                                  for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _numeric(column: str) -> bool:
    return column.startswith("test_") or column in {"rank", "metric_mean", "metric_std", "metric_ci95", "metric_ci_low", "metric_ci_high",
                      "n_seeds", "param_count", "train_time_s", "train_samples_per_sec", *COST}


def tables(records: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    """The row tables that tasks attach to records (``examples["tables"]``), one frame per name,
    each row keyed by the cell it came from."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for r in latest_config([r for r in records_of(records) if r.status == "ok"]):
        for name, table in r.examples.get("tables", {}).items():
            rows.setdefault(name, []).extend({**dict(zip(KEY, key_of(r))), "seed": r["seed"], **row} for row in table)
    return {name: pd.DataFrame(table) for name, table in rows.items()}


def merge_table(existing: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    return replace_rows(existing, new).sort_values(KEY + ["seed"], kind="stable")


def write_table(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))
