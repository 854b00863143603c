"""The numbers behind the report's tables and figures, shared by REPORT.md (``harness.report``,
matplotlib) and report.html (``harness.report_html``, Plotly): the Pareto front, the columns a
leaderboard shows, the learning curves and the tables that tasks attach to their examples, and the
labels of rows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import leaderboard
from .records import DEFAULT_TUNING
from .schema import NO_FAMILY, finite, number
from .verdicts import task_class

REPORT_COLUMNS = ["task", "rank", "model", "family", "size", "metric", "metric_mean", "metric_std", "metric_ci95", "n_seeds",
                  "param_count", "flops_per_sample", "train_time_s", "infer_samples_per_sec", "peak_mem_mb",
                  "time_to_target_s"]
OPTIONAL_COLUMNS = {"metric_std", "metric_ci95", *leaderboard.COST}  # shown only where some row has a value


def pareto_front(metric: Any, cost: Any, higher_is_better: bool) -> list[bool]:
    """For each point, whether it is on the Pareto front of (metric, cost): no other point has a cost
    <= its cost and a metric at least as good, with one of the two strictly better. Cost is always
    lower-is-better; the metric's direction is ``higher_is_better``. Points with a NaN never are."""
    m = np.asarray(metric, dtype=float) * (1.0 if higher_is_better else -1.0)  # larger = better
    c = np.asarray(cost, dtype=float)
    ok = np.isfinite(m) & np.isfinite(c)
    front = []
    for i in range(len(m)):
        if not ok[i]:
            front.append(False)
            continue
        dominated = ok & (c <= c[i]) & (m >= m[i]) & ((c < c[i]) | (m > m[i]))
        front.append(not bool(dominated.any()))
    return front


@dataclass
class CostPoints:
    """One task's leaderboard rows that have both the metric and ``cost``, as arrays: the metric's mean
    ``y`` with its 95% interval ``low``..``high`` (NaN with one seed), the cost ``x``, and the Pareto front."""

    rows: pd.DataFrame
    task: str
    metric: str
    higher: bool
    x: np.ndarray
    y: np.ndarray
    low: np.ndarray
    high: np.ndarray
    front: np.ndarray


def cost_points(rows: pd.DataFrame, cost: str) -> CostPoints | None:
    """:class:`CostPoints` of ``rows`` against the column ``cost``; None when no row has both numbers."""
    rows = rows[pd.to_numeric(rows[cost], errors="coerce").notna() & rows["metric_mean"].notna()]
    if rows.empty:
        return None
    higher = bool(rows["higher_is_better"].iloc[0])
    x = pd.to_numeric(rows[cost]).to_numpy(float)
    y = rows["metric_mean"].to_numpy(float)
    return CostPoints(rows, rows["task"].iloc[0], rows["metric"].iloc[0], higher, x, y,
                      pd.to_numeric(rows["metric_ci_low"], errors="coerce").to_numpy(float),
                      pd.to_numeric(rows["metric_ci_high"], errors="coerce").to_numpy(float),
                      np.array(pareto_front(y, x, higher)))


def metric_label(task: str, metric: str, higher_is_better: bool, split: str = "test") -> str:
    """What task ``task`` says its metric measures, e.g. 'test top1 (accuracy, higher is better)'."""
    return task_class(task).report.metric_label(metric, higher_is_better, split)


COST_LABELS = {"param_count": "parameters", "train_time_s": "training time (s)",
               "flops_per_sample": "forward FLOPs per sample", "peak_mem_mb": "peak memory (MB)"}


def columns(rows: pd.DataFrame) -> list[str]:
    at = REPORT_COLUMNS.index("n_seeds") + 1
    columns = REPORT_COLUMNS[:at] + leaderboard.task_metric_columns(rows) + REPORT_COLUMNS[at:]
    return [c for c in columns if c in rows.columns
            and (c not in OPTIONAL_COLUMNS or pd.to_numeric(rows[c], errors="coerce").notna().any())]


def curves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, size): a frame of (seed, epoch, step, y) from the records' histories."""
    key = f"val_{records[0]['metric']}" if records else ""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["model"], r["size"], r.get("tuning", DEFAULT_TUNING)), []).append(r)
    sizes, tunings = {size for _, size, _ in groups}, {tuning for _, _, tuning in groups}
    found = []
    for (model, size, tuning), recs in sorted(groups.items()):
        points = [{"seed": r["seed"], "epoch": h.get("epoch"), "step": h.get("step"), "y": h[key]}
                  for r in recs for h in (r.get("history") or []) if finite(h.get(key))]
        if not points:
            continue
        frame = pd.DataFrame(points)
        x_name = "epoch" if frame["epoch"].notna().all() else "step"
        if frame[x_name].isna().any():
            continue
        frame = frame.assign(**{x_name: frame[x_name].astype(float).round(6)})
        shown = [size] * (len(sizes) > 1) + [tuning] * (len(tunings) > 1)
        found.append({"label": f"{model} ({', '.join(shown)})" if shown else model, "family": recs[0].get("family"),
                       "n": frame["seed"].nunique(), "frame": frame, "x_name": x_name})
    return found


def labels(rows: pd.DataFrame) -> list[str]:
    sizes, tunings = rows["size"].nunique() > 1, "tuning" in rows and rows["tuning"].nunique() > 1
    labels = []
    for _, r in rows.iterrows():
        shown = [str(r["size"])] * sizes + [str(r["tuning"])] * tunings
        labels.append(f"{r['model']} ({', '.join(shown)})" if shown else str(r["model"]))
    return labels


def best_lines(rows: pd.DataFrame) -> list[str]:
    """Per size and tuning (the rows that compete): 'Best: model, metric mean ± its 95% interval', with
    the model that the paired test cannot tell from it (the next one, when the best's rank is a tie)."""
    lines = []
    for (size, tuning), group in rows.groupby(["size", "tuning"], sort=True):
        ranked = group.sort_values("rank", kind="stable")
        names = labels(ranked) if len(rows) == len(group) else [f"{m} ({size}, {tuning})" for m in ranked["model"]]
        top = ranked.iloc[0]
        half = number(top.get("metric_ci95"))
        text = f"Best: **{names[0]}**, {top['metric']} {top['metric_mean']:.4g}"
        text += f" ± {half:.3g}" if math.isfinite(half) else ""
        tied = [label for label, (_, r) in list(zip(names, ranked.iterrows()))[1:] if r["rank"] == top["rank"]]
        if len(ranked) > 1 and leaderboard._is_true(top.get("rank_tie")) and names[1] not in tied:
            tied.append(names[1])
        lines.append(text + (f"; the paired test cannot tell it from {', '.join(tied)}." if tied else "."))
    return lines




def example_frame(records: list[dict[str, Any]], name: str, x: str, y: str) -> pd.DataFrame:
    """The table ``name`` that a task attaches to its examples (``TaskReport.example_plots``), from every
    record: one row per (model, seed, table row) with columns model, family, seed, x, y; rows with a
    missing value are dropped, and no record with the table gives an empty frame."""
    rows = [{"model": r["model"], "family": r.get("family", NO_FAMILY), "seed": r["seed"],
             "x": row.get(x), "y": row.get(y)}
            for r in records for row in (r.get("examples") or {}).get("tables", {}).get(name, [])]
    return pd.DataFrame(rows).dropna() if rows else pd.DataFrame()
