"""Studies: where a task's leaderboard has a grid (``--params 50k,200k,800k``, ``--train-fraction
0.1,0.3,1``, or several sizes), from what scale or data the transformer wins.

Per task and tuning with two or more grid points (size labels) the report gets
- metric against parameters, against training items and against training compute (training FLOPs
  per sample x samples seen), log x axes, one line per model with its 95% intervals;
- the **crossover**: along the grid (parameters for a scaling study, training items for a data
  study), for each pair of model families (transformer against each other, as ``verdicts`` pairs
  them), the smallest point where the first family's best model is ahead by the verdict that
  ``verdicts.csv`` holds for that point (the paired test over seeds and test items, Holm-adjusted
  within the study's family; the preset point is a headline verdict), or "no crossover in range";
- a **power law** per model with three or more points: error = a * x^b by least squares on log-log
  (error = 1 - metric for a score in [0, 1] where higher is better, else the metric itself, a loss).

``results/studies.csv`` has one row per (task, grid point): the pair compared there and the test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure

from .records import atomic_write_text
from .schema import finite
from .styles import Shades, style

AXES = {"params": ("param_count", "parameters"), "samples": ("train_size", "training items"),
        "compute": ("train_compute", "training compute (FLOPs)")}


def grids(board: pd.DataFrame) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(domain, task, tuning) -> its rows, where the task has two or more grid points (sizes)."""
    board = board.assign(train_compute=pd.to_numeric(board["train_flops_per_sample"], errors="coerce")
                         * pd.to_numeric(board["train_samples"], errors="coerce"))
    return {key: rows for key, rows in board.groupby(["domain", "task", "tuning"], sort=True)
            if rows["size"].nunique() >= 2}


def study_axis(rows: pd.DataFrame) -> str:
    """'params' when the grid varies the models' size, else 'samples' (a data study)."""
    fraction = pd.to_numeric(rows["train_fraction"], errors="coerce").fillna(1.0)
    return "samples" if fraction.nunique() > 1 else "params"


def crossover(rows: pd.DataFrame, decided: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame, str]]:
    """Per pair of model families (as ``verdicts`` pairs them), per grid point ordered along the study's
    axis: the verdict row of ``decided`` (``verdicts.table``, this task and tuning) at that point, and
    the sentence: the smallest point where the first family is ahead, or none in range."""
    axis, _ = AXES[study_axis(rows)]
    x = {size: float(pd.to_numeric(at[axis], errors="coerce").mean()) for size, at in rows.groupby("size", sort=False)}
    compute = {(r["size"], r["model"]): float(r["train_compute"]) for _, r in rows.iterrows()}
    out = []
    found = decided[(decided["pair"] == "families") & decided["size"].isin(x)]
    for (fa, fb), pair in found.groupby(["family_a", "family_b"], sort=False):
        points = []
        for _, v in pair.iterrows():
            ahead, behind = v["winner"] == v["model_a"], v["winner"] == v["model_b"] and v["winner"] != ""
            points.append({"size": v["size"], "x": x[v["size"]], "family": v["family"], "model_a": v["model_a"],
                           "model_b": v["model_b"], "metric_a": v["metric_a"], "metric_b": v["metric_b"],
                           "compute_a": compute.get((v["size"], v["model_a"]), np.nan), "diff": v["diff"],
                           "ci_low": v["ci_low"], "ci_high": v["ci_high"], "p_value": v["p_value"], "p_holm": v["p_holm"],
                           "verdict": "untested" if v["test"] == "untested" else
                           f"{fa} ahead" if ahead else f"{fb} ahead" if behind else "no detectable difference"})
        table = pd.DataFrame(points).sort_values("x")
        out.append(((fa, fb), table, _crossover_sentence(table, study_axis(rows), fa)))
    return out


def _crossover_sentence(table: pd.DataFrame, axis: str, first: str) -> str:
    if table.empty:
        return "no grid point has models of both families"
    what = "parameters" if axis == "params" else "training items"
    span = f"{human(table['x'].min())} to {human(table['x'].max())} {what}"
    ahead = table[table["verdict"] == f"{first} ahead"]
    if ahead.empty:
        return f"no crossover in range ({span})"
    point = ahead.iloc[0]
    later = table[table["x"] >= point["x"]]
    held = "and at every larger point" if (later["verdict"] == f"{first} ahead").all() else \
        f"but not at every larger point (ahead at {len(ahead)} of {len(table)})"
    return (f"crossover at {human(point['x'])} {what} ({point['size']}): the smallest point where the {first} is "
            f"ahead (p = {point['p_value']:.2g}, Holm-adjusted {point['p_holm']:.2g} in the {point['family']} family; "
            f"its training compute {human(point['compute_a'])} FLOPs), {held}")


def power_law(x: Any, y: Any, higher_is_better: bool) -> dict[str, float] | None:
    """error = a * x^b fitted on log-log, with its R^2; None with fewer than three usable points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    error = 1.0 - y if higher_is_better and np.all((y >= 0) & (y <= 1)) else y
    ok = np.isfinite(x) & np.isfinite(error) & (x > 0) & (error > 0)
    if ok.sum() < 3 or np.unique(x[ok]).size < 3:
        return None
    lx, ly = np.log(x[ok]), np.log(error[ok])
    b, log_a = np.polyfit(lx, ly, 1)
    residual = ly - (log_a + b * lx)
    r2 = 1.0 - float(residual @ residual) / float(((ly - ly.mean()) ** 2).sum()) if ly.std() > 0 else math.nan
    return {"a": float(math.exp(log_a)), "b": float(b), "r2": r2, "points": int(ok.sum())}


def plot(rows: pd.DataFrame, axis: str) -> Figure | None:
    """The metric against one axis (AXES), one line per model with 95% interval bars; log x."""
    column, label = AXES[axis]
    rows = rows[pd.to_numeric(rows[column], errors="coerce") > 0]
    if rows.empty or (rows.groupby("model")[column].nunique() < 2).all():  # one value per model: nothing to draw
        return None
    task, metric, higher = rows["task"].iloc[0], rows["metric"].iloc[0], bool(rows["higher_is_better"].iloc[0])
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    shades = Shades()
    for model, line in rows.groupby("model", sort=True):
        family = str(line["family"].iloc[0])
        colour = shades.next(family)
        line = line.assign(x=pd.to_numeric(line[column])).sort_values("x")
        y = line["metric_mean"].to_numpy(float)
        low, high = (pd.to_numeric(line[c], errors="coerce").to_numpy(float) for c in ("metric_ci_low", "metric_ci_high"))
        bars = np.where(np.isfinite(low + high), [y - low, high - y], 0.0)
        ax.errorbar(line["x"], y, yerr=bars, marker=style(family).marker, capsize=3, color=colour,
                    linestyle=style(family).line, label=f"{model} ({family})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: human(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.set_ylabel(f"test {metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(f"{task}: {metric} vs {label}\n(mean over seeds; bars: 95% CI)", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return fig


def section(board: pd.DataFrame, decided: pd.DataFrame, out: Path, save_png: Callable[[Figure, Path], Path]) -> list[str]:
    """The report's study section (none without a grid), from the leaderboard ``board`` and the verdict
    table ``decided`` (``verdicts.table``); writes out/studies.csv and the plots."""
    found = grids(board)
    if not found:
        return []
    lines = ["## Studies: from what size, data or compute does one family win?", ""]
    tables = []
    for (domain, task, tuning), rows in found.items():
        axis = study_axis(rows)
        mine = decided[(decided["domain"] == domain) & (decided["task"] == task) & (decided["tuning"] == tuning)]
        kind = "scaling (parameters)" if axis == "params" else "data (training items)"
        tuned = "" if tuning == "default" else f", tuning {tuning}"
        cells = int(pd.to_numeric(rows["n_seeds"]).sum())
        train_s = float((pd.to_numeric(rows["train_time_s"]) * pd.to_numeric(rows["n_seeds"])).sum())
        cost = (f"Cost: {cells} cells ({rows['size'].nunique()} points x {rows['model'].nunique()} models x seeds), "
                f"{train_s / 60:.1f} minutes of training on {rows['device_name'].iloc[0]} (evaluation not included).")
        lines += [f"### {domain} / {task}: {kind}{tuned}", "", cost, ""]
        for (fa, fb), table, sentence in crossover(rows, mine):
            tables.append(table.assign(domain=domain, task=task, tuning=tuning, axis=axis, family_a=fa, family_b=fb))
            lines += [f"**{fa} vs {fb}: {sentence}.**", "",
                      f"| point | x | {fa} | {fb} | A - B [95% CI] | p | p (Holm) | family | at this point |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for _, p in table.iterrows():
                ci = f" [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]" if finite(p.get("ci_low")) else ""
                lines.append(f"| {p['size']} | {human(p['x'])} | {p['model_a']} {p['metric_a']:.4f} | {p['model_b']} "
                             f"{p['metric_b']:.4f} | {_signed(p.get('diff'))}{ci} | {_p(p.get('p_value'))} | "
                             f"{_p(p.get('p_holm'))} | {p['family']} | {p['verdict']} |")
            lines.append("")
        lines += [*_fits(rows, axis), ""]
        for name in ("params", "samples", "compute"):
            fig = plot(rows, name)
            if fig is not None:
                path = f"{domain}_{task}_{'' if tuning == 'default' else tuning + '_'}study_{name}.png"
                save_png(fig, out / "plots" / path)
                lines.append(f"![{task}: metric vs {AXES[name][1]}](plots/{path})")
        lines.append("")
    if tables:
        atomic_write_text(out / "studies.csv", pd.concat(tables, ignore_index=True).to_csv(index=False, float_format="%.6g"))
    return lines


def _p(value: Any) -> str:
    return f"{value:.2g}" if finite(value) else "-"


def meeting_point(a: dict[str, float], b: dict[str, float]) -> float | None:
    """Where two power laws a1 x^b1 and a2 x^b2 cross (None where they are parallel)."""
    if math.isclose(a["b"], b["b"]):
        return None
    return math.exp(math.log(b["a"] / a["a"]) / (a["b"] - b["b"]))


def _fits(rows: pd.DataFrame, axis: str) -> list[str]:
    column, label = AXES[axis]
    higher = bool(rows["higher_is_better"].iloc[0])
    out, fits = [], {}
    for model, line in rows.groupby("model", sort=True):
        fit = power_law(pd.to_numeric(line[column], errors="coerce"), line["metric_mean"], higher)
        if fit is not None:
            fits[model, line["family"].iloc[0]] = fit
            what = "error" if higher else rows["metric"].iloc[0]
            out.append(f"- {model}: {what} = {fit['a']:.3g} x ({label})^{fit['b']:.3f} (R^2 {fit['r2']:.2f}, "
                       f"{fit['points']} points)")
    top = pd.to_numeric(rows[column], errors="coerce").max()
    for (t, family_t), ft in fits.items():
        for (b, family_b), fb in fits.items():
            x = meeting_point(ft, fb) if family_t != family_b else None
            if x is not None and ft["b"] < fb["b"] and x > top:  # t's error falls faster, models of two families
                out.append(f"- the fits of {t} and {b} meet at {human(x)} {label}, beyond the range: an "
                           f"extrapolation, not a result")
    return out or ["- no model has three points for a power-law fit"]



def _signed(value: Any) -> str:
    return f"{value:+.4f}" if finite(value) else "-"


def human(value: float) -> str:
    """136000 -> '136k', 1.2e6 -> '1.2M' ('-' for a missing value)."""
    if not finite(value):
        return "-"
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
