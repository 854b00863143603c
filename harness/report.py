"""Cell records -> results/REPORT.md and results/plots/*.png: the fair comparison, read at a glance.

``write_report(records, out)`` writes ``out/REPORT.md`` with

- a transformer-vs-baseline summary (``verdicts``): per task the best transformer against the best
  model of any other family (``family`` is free text: "baseline", or a plugin's "mlp"), the
  difference with its 95% interval, p-values raw and Holm-adjusted across the tasks, the minimum
  detectable effect and the verdict, then the count of tested verdicts (also ``verdicts.csv``);
- where models were tuned alike, the tuning section (``report_tuning``: tuned against default, the
  optimisation histories); where a task has a grid of sizes or training fractions, the study section
  (``studies``: metric against parameters, data and compute, the crossover, power-law fits);
- per domain, the leaderboard table (``leaderboard.to_markdown``, plus the cost columns that the
  records carry), and per task three plots under ``out/plots/``:
  ``<domain>_<task>_params.png`` (metric vs parameters, log x), ``<domain>_<task>_time.png`` (metric
  vs training time) with the Pareto front of (metric, cost) marked and 95% error bars where a model
  has several seeds, and ``<domain>_<task>_curves.png`` (validation headline metric vs epoch, mean
  over seeds with a min..max band).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, so no global backend or figure
registry is touched) and saved as PNG by the Agg renderer. Every file is written atomically.
Records of older runs (no cost fields, no history) and single seeds are handled: what is missing is
left out and said so.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from matplotlib import ticker
from matplotlib.figure import Figure


from . import leaderboard, report_tuning, studies, verdicts
from .verdicts import task_class
from .records import atomic_file, atomic_write_text
from .schema import records_of
from .styles import Shades, style
from .report_data import (COST_LABELS, best_lines, columns, cost_points, curves, example_frame, labels,
                          metric_label, pareto_front)

DPI = 120
HOW_TO_READ = (
    "How to read: metric values are test-set means over seeds, `±` half the width of their 95% interval (seed "
    "and test-item variance, at least the Wilson interval on the range of the task's item values, so a row at the "
    "ceiling is never a point); a rank shown as `=1` is a statistical tie with the leader (the paired test over "
    "seeds and test items cannot tell the model from the best one at 5%, Holm-adjusted over the tests against "
    "the leader). The verdicts (also in `verdicts.csv`) compare the best model of each family of models, chosen on "
    "the validation split, with that paired test; p-values are Holm-adjusted within a declared family (headline: "
    "one coordinate per task; tuned; one per study; requested pairs), so a study never moves a headline verdict. "
    "The interval of A - B is unadjusted; the MDE is the difference the test would find with 80% power; a single "
    "seed compares trained models, not training recipes, so its verdict is provisional. `python -m harness "
    "compare TASK A B` gives the detail of one pair. Models on the Pareto front (ringed) are those that no other "
    "model beats in both metric and cost.")


# ------------------------------------------------------------------------------------ the figures

def plot_metric_vs_cost(rows: pd.DataFrame, cost: str) -> Figure | None:
    """One task's leaderboard rows: the headline test metric against ``cost`` (a column), one point per
    model coloured and shaped by family, 95% error bars where n > 1, the Pareto front as a step line
    through ringed points. None when no row has both numbers."""
    points = cost_points(rows, cost)
    if points is None:
        return None
    rows, task, metric, higher = points.rows, points.task, points.metric, points.higher
    x, y, low, high, front = points.x, points.y, points.low, points.high, points.front
    names = labels(rows)
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    seen: set[str] = set()
    for i, family in enumerate(rows["family"]):
        colour, marker = style(family).colour, style(family).marker
        bar = [[y[i] - low[i]], [high[i] - y[i]]] if math.isfinite(low[i] + high[i]) else None  # may be asymmetric
        ax.errorbar(x[i], y[i], yerr=bar, fmt=marker, color=colour,
                    markersize=8, capsize=4, label=None if family in seen else family, zorder=3)
        seen.add(family)
        ax.annotate(names[i], (x[i], y[i]), textcoords="offset points", xytext=(6, 5), fontsize=8)
    if front.any():
        order = np.argsort(x[front])
        fx, fy = x[front][order], y[front][order]
        ax.step(fx, fy, where="post", color="black", linestyle=":", linewidth=1, zorder=2)
        ax.scatter(fx, fy, s=220, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4,
                   label="Pareto front")
    if (x > 0).all() and (cost == "param_count" or x.max() / x.min() > 20):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: studies.human(v)))
        if x.max() / x.min() < 10:  # under a decade: a few plain ticks, not 1.36x10^5
            ax.xaxis.set_major_locator(ticker.MaxNLocator(5))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(COST_LABELS.get(cost, cost) + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.set_ylabel(metric_label(task, metric, higher))
    n = rows["n_seeds"].astype(int)
    seeds = f"{n.min()} seed{'s' if n.min() > 1 else ''}" if n.min() == n.max() else f"{n.min()}..{n.max()} seeds"
    ax.set_title(f"{task}: {metric} vs {COST_LABELS.get(cost, cost)}\n({seeds} per model; bars: 95% CI where n > 1)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_learning_curves(records: list[dict[str, Any]]) -> Figure | None:
    """One task's records: the validation headline metric against epoch (step where a history has no
    epochs), one line per model (mean over seeds) with a min..max band over seeds; solid lines for
    transformers, dashed for baselines. None when no record has a validation history."""
    found = curves(records)
    if not found:
        return None
    r0 = records[0]
    metric, higher = r0["metric"], bool(r0["higher_is_better"])
    x_name = "epoch" if all(c["x_name"] == "epoch" for c in found) else "step"
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    shades = Shades()
    for c in found:
        colour, marker, line = shades.next(c["family"]), style(c["family"]).marker, style(c["family"]).line
        g = c["frame"].groupby(x_name)["y"].agg(["mean", "min", "max", "count"]).sort_index()
        xs = g.index.to_numpy(float)
        ax.plot(xs, g["mean"], linestyle=line, marker=marker, markersize=3 if len(xs) > 15 else 5, color=colour,
                label=f"{c['label']} ({c['family']}, n={c['n']})")
        if c["n"] > 1:
            ax.fill_between(xs, g["min"], g["max"], color=colour, alpha=0.18, linewidth=0)
    target = next((r["target"] for r in records if r.get("target") is not None), None)
    if isinstance(target, (int, float)) and not isinstance(target, bool) and math.isfinite(target):
        ax.axhline(target, color="gray", linestyle=":", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel(x_name if x_name == "step" else "epoch (passes over the training data)")
    ax.set_ylabel(metric_label(r0["task"], metric, higher, split="validation"))
    ax.set_title(f"{r0['task']}: validation {metric} during training\n(line: mean over seeds; band: min..max)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_example_table(records: list[dict[str, Any]], name: str, x: str, y: str) -> Figure | None:
    """A table that a task attaches to its examples (``TaskReport.example_plots``), e.g. offline RL's return
    conditioning: ``y`` against ``x``, one line per model (mean over seeds) with a min..max band; the
    diagonal y = x where both are in the same units (the columns end alike, e.g. ``*_return``). None
    when no record has the table."""
    frame = example_frame(records, name, x, y)
    if frame.empty:
        return None
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    shades = Shades()
    for model, g in frame.groupby("model", sort=True):
        family = g["family"].iloc[0]
        colour, marker, line = shades.next(family), style(family).marker, style(family).line
        stats_ = g.groupby("x")["y"].agg(["mean", "min", "max"]).sort_index()
        xs = stats_.index.to_numpy(float)
        ax.plot(xs, stats_["mean"], linestyle=line, marker=marker, color=colour,
                label=f"{model} ({family}, n={g['seed'].nunique()})")
        ax.fill_between(xs, stats_["min"], stats_["max"], color=colour, alpha=0.15, linewidth=0)
    if x.rsplit("_", 1)[-1] == y.rsplit("_", 1)[-1]:
        lo, hi = float(frame["x"].min()), float(frame["x"].max())
        ax.plot([lo, hi], [lo, hi], color="gray", linestyle=":", linewidth=1, label=f"{y} = {x}")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(f"{records[0]['task']}: {name.replace('_', ' ')}\n(line: mean over seeds; band: min..max of the seeds' means)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Save ``fig`` as PNG atomically (records.atomic_file)."""
    try:
        with atomic_file(path, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        fig.clear()  # a pyplot-free Figure is freed with its last reference; clearing drops artists now
    return path


# ------------------------------------------------------------------------------------- the report

def write_report(records: list[dict[str, Any]], out: Path, outcomes: leaderboard.Outcomes | None = None,
                 pairs: Iterable[tuple[str, str]] = ()) -> Path:
    """Write ``out/REPORT.md``, its plots under ``out/plots/``, ``out/verdicts.csv`` and
    ``out/report.html`` from cell records (any domains, any number of seeds, old or new) and their
    per-item ``outcomes`` (``records.load_outcomes``; without them every verdict is untested); return
    REPORT.md's path."""
    return write_reports(records, out, outcomes, pairs)[0]


def write_reports(records: list[dict[str, Any]], out: Path, outcomes: leaderboard.Outcomes | None = None,
                  pairs: Iterable[tuple[str, str]] = ()) -> tuple[Path, pd.DataFrame]:
    """:func:`write_report`, also returning the verdict table it wrote (``verdicts.table``), so that
    the terminal prints the very rows that ``verdicts.csv`` holds."""
    out = Path(out)
    ok = leaderboard.latest_config([r for r in records_of(records) if r.status == "ok"])
    board = leaderboard.aggregate(ok, outcomes)
    lines = ["# attention-zoo report", ""]
    if board.empty:
        lines += ["No successful cell records yet: run `python -m harness run DOMAIN` first.", ""]
        _write_html(out, board, ok, None, [])
        return _write_md(out, lines), pd.DataFrame(columns=verdicts.COLUMNS)
    table = verdicts.table(board, outcomes or {}, pairs)
    verdicts.write(table, out / "verdicts.csv")
    finished = max((str(r.get("finished", "")) for r in ok), default="")
    summary = [f"{len(ok)} cell records, {board['domain'].nunique()} domain(s), {len(board)} leaderboard rows; "
               f"latest cell finished {finished} (UTC).", *verdicts.summary_lines(table)]
    _write_html(out, board, ok, table, summary)
    lines += [summary[0], "", HOW_TO_READ, "", "## Verdicts: families of models compared", "", *summary[1:], ""]
    lines += report_tuning.section(ok, board, outcomes or {}, out, save_png)
    lines += studies.section(board, table, out, save_png)
    for domain, domain_rows in board.groupby("domain", sort=True):
        lines += [f"## {domain}", "", leaderboard.to_markdown(domain_rows, columns(domain_rows)), ""]
        if leaderboard.has_ties(domain_rows):
            lines += [leaderboard.TIE_NOTE, ""]
        for task, rows in domain_rows.groupby("task", sort=True):
            lines += [f"### {domain} / {task}", ""]
            about = task_class(task).report.about
            lines += [about, ""] if about else []
            lines += [*best_lines(rows), ""]
            task_records = [r for r in ok if r["domain"] == domain and r["task"] == task]
            figures = {
                "params": (plot_metric_vs_cost(rows, "param_count"), "metric vs parameters"),
                "time": (plot_metric_vs_cost(rows, "train_time_s"), "metric vs training time"),
                "curves": (plot_learning_curves(task_records), "validation learning curves"),
                **{name: (plot_example_table(task_records, name, *axes), name.replace("_", " "))
                   for name, axes in task_class(task).report.example_plots.items()},
            }
            for kind, (fig, alt) in figures.items():
                if fig is None:
                    lines.append(f"- {alt}: nothing to plot (no {'validation history' if kind == 'curves' else 'values'}"
                                 " in the records)")
                    continue
                name = f"{_slug(domain)}_{_slug(task)}_{kind}.png"
                save_png(fig, out / "plots" / name)
                lines.append(f"![{task}: {alt}](plots/{name})")
            front = rows[pareto_front(rows["metric_mean"], rows["param_count"], bool(rows["higher_is_better"].iloc[0]))]
            lines += ["", f"Pareto front in (metric, parameters): {', '.join(labels(front)) or '-'}.", ""]
    return _write_md(out, lines), table


# ------------------------------------------------------------------------------------------ helpers

def _html_module() -> Any:
    """``harness.report_html``, or the ImportError that says which of Plotly and itables is missing."""
    try:
        from . import report_html
    except ImportError as e:
        return e
    return report_html


def _write_html(out: Path, board: pd.DataFrame, ok: list[dict[str, Any]], table: pd.DataFrame | None,
                summary: list[str]) -> None:
    """report.html (``harness.report_html``); where Plotly or itables is missing (a bare GPU machine
    that got no wheels), a warning instead: the leaderboards and REPORT.md never depend on it."""
    module = _html_module()
    if isinstance(module, ImportError):
        print(f"warning: {out / 'report.html'} not written: {module.name} is not installed (pip install plotly "
              "itables)", file=sys.stderr)
        return
    module.write_html(out, board, ok, table, summary, HOW_TO_READ)


def written(report_md: Path) -> str:
    """What ``write_report`` wrote, for the line that says so: REPORT.md, and report.html beside it
    where it could be written."""
    if isinstance(_html_module(), ImportError):
        return str(report_md)
    return f"{report_md} and {report_md.parent / 'report.html'}"


def _write_md(out: Path, lines: list[str]) -> Path:
    path = out / "REPORT.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name))
