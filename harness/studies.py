"""Studies: where a task's leaderboard has a grid (``--params 50k,200k,800k``, ``--train-fraction
0.1,0.3,1``, or several sizes), from what scale or data the transformer wins.

Per task and tuning with two or more grid points (size labels) the report gets
- metric against parameters, against training items and against training compute (training FLOPs
  per sample x samples seen), log x axes, one line per model with its 95% intervals;
- the **crossover**: along the grid (parameters for a scaling study, training items for a data
  study), the smallest point where the best transformer is ahead of the best baseline by the paired
  test over seeds and test items (``stats.compare``, at ``alpha``), or "no crossover in range";
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

from . import stats
from .leaderboard import NO_FAMILY, Outcomes
from .records import KEY, atomic_write_text

SHADES = {"transformer": ["tab:blue", "tab:cyan", "tab:purple"], "baseline": ["tab:orange", "tab:red", "tab:brown"]}
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


def _best(rows: pd.DataFrame, transformer: bool) -> pd.Series | None:
    family = rows["family"]
    chosen = rows[family.notna() & (family != NO_FAMILY) & ((family == "transformer") == transformer)]
    return None if chosen.empty else chosen.sort_values(["rank", "model"]).iloc[0]


def crossover(rows: pd.DataFrame, outcomes: Outcomes, alpha: float = stats.ALPHA) -> tuple[pd.DataFrame, str]:
    """Per grid point (ordered along the study's axis): the best transformer against the best baseline
    there, and the sentence: the smallest point where the transformer is ahead, or none in range."""
    axis, _ = AXES[study_axis(rows)]
    points = []
    for size, at in rows.groupby("size", sort=False):
        t, b = _best(at, True), _best(at, False)
        if t is None or b is None:
            continue
        point = {"size": size, "x": float(pd.to_numeric(at[axis], errors="coerce").mean()),
                 "transformer": t["model"], "baseline": b["model"], "metric_t": float(t["metric_mean"]),
                 "metric_b": float(b["metric_mean"]), "compute_t": float(t["train_compute"])}
        ot, ob = outcomes.get(tuple(t[k] for k in KEY)), outcomes.get(tuple(b[k] for k in KEY))
        if ot is not None and ob is not None:
            try:
                c = stats.compare(ot, ob, bool(t["higher_is_better"]), alpha)
                ahead = c.p_value < alpha and (c.diff > 0) == bool(t["higher_is_better"])
                behind = c.p_value < alpha and not ahead
                point.update(diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
                             verdict="transformer ahead" if ahead else "baseline ahead" if behind else "no detectable difference")
            except ValueError:
                point["verdict"] = "untested"
        else:
            point["verdict"] = "untested"
        points.append(point)
    table = pd.DataFrame(points).sort_values("x") if points else pd.DataFrame()
    return table, _crossover_sentence(table, study_axis(rows))


def _crossover_sentence(table: pd.DataFrame, axis: str) -> str:
    if table.empty:
        return "no grid point has both a transformer and a baseline"
    what = "parameters" if axis == "params" else "training items"
    span = f"{human(table['x'].min())} to {human(table['x'].max())} {what}"
    ahead = table[table["verdict"] == "transformer ahead"]
    if ahead.empty:
        return f"no crossover in range ({span})"
    first = ahead.iloc[0]
    later = table[table["x"] >= first["x"]]
    held = "and at every larger point" if (later["verdict"] == "transformer ahead").all() else \
        f"but not at every larger point (ahead at {len(ahead)} of {len(table)})"
    return (f"crossover at {human(first['x'])} {what} ({first['size']}): the smallest point where the transformer is "
            f"ahead by the paired test (p = {first['p_value']:.2g}; its training compute {human(first['compute_t'])} "
            f"FLOPs), {held}")


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
    used: dict[str, int] = {}
    for model, line in rows.groupby("model", sort=True):
        family = str(line["family"].iloc[0])
        shades = SHADES.get(family, ["tab:gray"])
        colour = shades[used.get(family, 0) % len(shades)]
        used[family] = used.get(family, 0) + 1
        line = line.assign(x=pd.to_numeric(line[column])).sort_values("x")
        y = line["metric_mean"].to_numpy(float)
        low, high = (pd.to_numeric(line[c], errors="coerce").to_numpy(float) for c in ("metric_ci_low", "metric_ci_high"))
        bars = np.where(np.isfinite(low + high), [y - low, high - y], 0.0)
        ax.errorbar(line["x"], y, yerr=bars, marker="o" if family == "transformer" else "s", capsize=3, color=colour,
                    linestyle="-" if family == "transformer" else "--", label=f"{model} ({family})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: human(v)))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"{label} (log scale)")
    ax.set_ylabel(f"test {metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(f"{task}: {metric} vs {label}\n(mean over seeds; bars: 95% CI)", fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return fig


def section(board: pd.DataFrame, outcomes: Outcomes, out: Path, save_png: Callable[[Figure, Path], Path]) -> list[str]:
    """The report's study section (none without a grid); writes out/studies.csv and the plots."""
    found = grids(board)
    if not found:
        return []
    lines = ["## Studies: from what size, data or compute does the transformer win?", ""]
    tables = []
    for (domain, task, tuning), rows in found.items():
        table, sentence = crossover(rows, outcomes)
        axis = study_axis(rows)
        tables.append(table.assign(domain=domain, task=task, tuning=tuning, axis=axis))
        kind = "scaling (parameters)" if axis == "params" else "data (training items)"
        tuned = "" if tuning == "default" else f", tuning {tuning}"
        cells = int(pd.to_numeric(rows["n_seeds"]).sum())
        train_s = float((pd.to_numeric(rows["train_time_s"]) * pd.to_numeric(rows["n_seeds"])).sum())
        cost = (f"Cost: {cells} cells ({rows['size'].nunique()} points x {rows['model'].nunique()} models x seeds), "
                f"{train_s / 60:.1f} minutes of training on {rows['device_name'].iloc[0]} (evaluation not included).")
        lines += [f"### {domain} / {task}: {kind}{tuned}", "", f"**{sentence[0].upper() + sentence[1:]}.** {cost}", "",
                  "| point | x | transformer | baseline | T - B [95% CI] | p | at this point |", "|---|---|---|---|---|---|---|"]
        for _, p in table.iterrows():
            ci = f" [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]" if _finite(p.get("ci_low")) else ""
            p_text = f"{p['p_value']:.2g}" if _finite(p.get("p_value")) else "-"
            lines.append(f"| {p['size']} | {human(p['x'])} | {p['transformer']} {p['metric_t']:.4f} | {p['baseline']} "
                         f"{p['metric_b']:.4f} | {_signed(p.get('diff'))}{ci} | {p_text} | {p['verdict']} |")
        lines += ["", *_fits(rows, axis), ""]
        for name in ("params", "samples", "compute"):
            fig = plot(rows, name)
            if fig is not None:
                path = f"{domain}_{task}_{'' if tuning == 'default' else tuning + '_'}study_{name}.png"
                save_png(fig, out / "plots" / path)
                lines.append(f"![{task}: metric vs {AXES[name][1]}](plots/{path})")
        lines.append("")
    atomic_write_text(out / "studies.csv", pd.concat(tables, ignore_index=True).to_csv(index=False, float_format="%.6g"))
    return lines


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
            fits[model, line["family"].iloc[0] == "transformer"] = fit
            what = "error" if higher else rows["metric"].iloc[0]
            out.append(f"- {model}: {what} = {fit['a']:.3g} x ({label})^{fit['b']:.3f} (R^2 {fit['r2']:.2f}, "
                       f"{fit['points']} points)")
    top = pd.to_numeric(rows[column], errors="coerce").max()
    for (t, is_t), ft in fits.items():
        for (b, is_b), fb in fits.items():
            x = meeting_point(ft, fb) if is_t and not is_b else None
            if x is not None and ft["b"] < fb["b"] and x > top:  # the transformer's error falls faster
                out.append(f"- the fits of {t} and {b} meet at {human(x)} {label}, beyond the range: an "
                           f"extrapolation, not a result")
    return out or ["- no model has three points for a power-law fit"]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if _finite(value) else "-"


def human(value: float) -> str:
    """136000 -> '136k', 1.2e6 -> '1.2M' ('-' for a missing value)."""
    if not _finite(value):
        return "-"
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
