"""Cell records -> results/report.html: the report for a browser, in one self-contained file.

``write_html(out, board, records, verdict_table, summary)`` writes ``out/report.html``, which works
offline (every script and style inline, nothing fetched):

- the verdicts (``verdicts.table``) as a table that leads with the answer (task, coordinate, A, B,
  effect, adjusted p, verdict), every column of verdicts.csv under a "details" switch;
- per domain its leaderboard as a sortable, searchable table (DataTables through ``itables``), each
  row linking to its cell records (the JSON files under ``out/runs/``, one link per seed);
- per task what it tests (``TaskReport.about``), the best model, and interactive Plotly figures: the
  headline metric against parameters and against training time (95% intervals, the Pareto front),
  the validation learning curves (mean over seeds, min..max band) and the tables that the task
  attaches to its examples (``TaskReport.example_plots``). Hovering a point shows the model, its seed
  count, the value and its interval.

Plotly's and DataTables' scripts are inlined once (about 5.5 MB together); each figure and table
adds only its data. The numbers come from ``harness.report_data``, the same as REPORT.md's figures.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from itables import to_html_datatable
from itables.javascript import generate_init_offline_itables_html
from itables.options import dt_bundle
from plotly.offline import get_plotlyjs

from . import leaderboard
from .records import atomic_write_text, key_of, record_path
from .report_data import (COST_LABELS, best_lines, columns, cost_points, curves, example_frame, labels,
                          metric_label)
from .styles import OTHER, Shades, style
from .schema import number, records_of
from .verdicts import coordinate, fmt_p, task_class

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
VERDICT_LEAD = ["task", "coordinate", "A", "B", "A - B [95% CI]", "p (Holm)", "verdict"]  # what a reader needs first
TABLE_OPTIONS = dict(connected=False, allow_html=True, maxBytes=0, paging=False, classes="display compact nowrap",
                     scrollX=True, format_floats_in_python=False, text_in_header_can_be_selected=False,
                     showIndex=False, display_logo_when_loading=False,  # every row, a search box, click to sort
                     layout={"topStart": "info", "topEnd": "search", "bottomStart": None, "bottomEnd": None})
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 1.5em 3em; color: #1b1b1b; line-height: 1.45; }
h1 { margin-top: 1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
nav a { margin-right: 1em; } .note { color: #555; font-size: .92em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1em; }
.figure { border: 1px solid #eee; border-radius: 4px; }
table.dataTable td, table.dataTable th { font-size: .85em; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


# ------------------------------------------------------------------------------------ the figures

def figure_metric_vs_cost(rows: pd.DataFrame, cost: str) -> go.Figure | None:
    """One task's leaderboard rows: the headline test metric against ``cost``, one marker per model
    (colour and shape by family), asymmetric 95% error bars where n > 1, the Pareto front as a dotted
    step line. Hover: model, seeds, the value with its interval, the cost. None when no row has both."""
    points = cost_points(rows, cost)
    if points is None:
        return None
    rows, task, metric, higher = points.rows, points.task, points.metric, points.higher
    x, y, low, high, front = points.x, points.y, points.low, points.high, points.front
    names = np.array(labels(rows), dtype=object)
    x_format = ",.0f" if cost in ("param_count", "flops_per_sample") else ".4g"  # 153,700 parameters; 21.3 s
    fig = go.Figure()
    for family in sorted(set(rows["family"])):
        at = (rows["family"] == family).to_numpy()
        interval = [f"[{lo:.4g}, {hi:.4g}]" if math.isfinite(lo + hi) else "none (one seed)"
                    for lo, hi in zip(low[at], high[at])]
        fig.add_trace(go.Scatter(
            x=x[at], y=y[at], mode="markers+text", name=family, text=names[at], textposition="top center",
            cliponaxis=False,
            marker=dict(size=11, color=style(family).colour, symbol=style(family).symbol),
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(high[at] - y[at]),
                         arrayminus=np.nan_to_num(y[at] - low[at]), thickness=1.2),
            customdata=np.column_stack([names[at], rows["n_seeds"].to_numpy()[at], interval]),
            hovertemplate=(f"<b>%{{customdata[0]}}</b> ({family})<br>seeds: %{{customdata[1]}}<br>"
                           f"{metric}: %{{y:.4g}}, 95% CI %{{customdata[2]}}<br>"
                           f"{COST_LABELS.get(cost, cost)}: %{{x:{x_format}}}<extra></extra>")))
    if front.any():
        order = np.argsort(x[front])
        fig.add_trace(go.Scatter(x=x[front][order], y=y[front][order], mode="lines", name="Pareto front",
                                 line=dict(shape="hv", dash="dot", color="black", width=1), hoverinfo="skip"))
    log_x = bool((x > 0).all() and (cost == "param_count" or x.max() / x.min() > 20))
    return _layout(fig, f"{task}: {metric} vs {COST_LABELS.get(cost, cost)}",
                   COST_LABELS.get(cost, cost) + (" (log scale)" if log_x else ""),
                   metric_label(task, metric, higher), log_x=log_x)


def figure_learning_curves(records: list[dict[str, Any]]) -> go.Figure | None:
    """One task's records: the validation headline metric against epoch (step where a history has no
    epochs), per model the mean over seeds with a min..max band. Hover: model, seeds, x, mean, range."""
    found = curves(records)
    if not found:
        return None
    r0 = records[0]
    x_name = "epoch" if all(c["x_name"] == "epoch" for c in found) else "step"
    fig = go.Figure()
    shades = Shades()
    for c in found:
        g = c["frame"].groupby(x_name)["y"].agg(["mean", "min", "max"]).sort_index()
        _lines_with_band(fig, g.index.to_numpy(float), g, c["label"], c["family"], c["n"], shades, x_name,
                         f"val {r0['metric']}")
    return _layout(fig, f"{r0['task']}: validation {r0['metric']} during training", x_name,
                   metric_label(r0["task"], r0["metric"], bool(r0["higher_is_better"]), split="validation"))


def figure_example_table(records: list[dict[str, Any]], name: str, x: str, y: str) -> go.Figure | None:
    """A table that the task attaches to its examples: ``y`` against ``x`` per model (mean over
    seeds, min..max band), with the diagonal where both are in the same units. None without values."""
    frame = example_frame(records, name, x, y)
    if frame.empty:
        return None
    fig = go.Figure()
    shades = Shades()
    for model, g in frame.groupby("model", sort=True):
        summary = g.groupby("x")["y"].agg(["mean", "min", "max"]).sort_index()
        _lines_with_band(fig, summary.index.to_numpy(float), summary, str(model), g["family"].iloc[0],
                         g["seed"].nunique(), shades, x.replace("_", " "), y.replace("_", " "))
    if x.rsplit("_", 1)[-1] == y.rsplit("_", 1)[-1]:
        lo, hi = float(frame["x"].min()), float(frame["x"].max())
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name=f"{y} = {x}", hoverinfo="skip",
                                 line=dict(dash="dot", color=OTHER.colour, width=1)))
    return _layout(fig, f"{records[0]['task']}: {name.replace('_', ' ')}", x.replace("_", " "), y.replace("_", " "))


def _lines_with_band(fig: go.Figure, xs: np.ndarray, g: pd.DataFrame, label: str, family: str, n: int,
                     shades: Shades, x_label: str, y_label: str) -> None:
    """A model's mean line (its family's dash) and, over several seeds, its min..max band."""
    colour = shades.next(family)
    if n > 1:
        fig.add_trace(go.Scatter(x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([g["max"], g["min"][::-1]]),
                                 mode="lines", fill="toself", fillcolor=colour, opacity=0.18, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=label))
    fig.add_trace(go.Scatter(
        x=xs, y=g["mean"], mode="lines+markers", name=f"{label} ({family}, n={n})", legendgroup=label,
        line=dict(color=colour, dash=style(family).dash), marker=dict(size=6, symbol=style(family).symbol),
        customdata=np.column_stack([g["min"], g["max"]]),
        hovertemplate=(f"<b>{html.escape(label)}</b> ({family})<br>seeds: {n}<br>{x_label}: %{{x:.4g}}<br>"
                       f"{y_label}: %{{y:.4g}} (mean), seeds' range [%{{customdata[0]:.4g}}, %{{customdata[1]:.4g}}]"
                       "<extra></extra>")))


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, log_x: bool = False) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14)), template="plotly_white", height=460,
                      margin=dict(l=60, r=20, t=50, b=20), hovermode="closest",
                      legend=dict(font=dict(size=10), orientation="h", yanchor="top", y=-0.2))
    fig.update_xaxes(title_text=x_title, type="log" if log_x else None)
    fig.update_yaxes(title_text=y_title)
    return fig


# ------------------------------------------------------------------------------------- the tables

def leaderboard_table(rows: pd.DataFrame, records: list[dict[str, Any]], table_id: str) -> str:
    """A domain's leaderboard rows as a DataTable: the report's columns, numbers rounded for reading
    (sorting stays numeric), ties shown as '=N' in ``tie`` and a ``records`` column of links."""
    shown = columns(rows)
    frame = _rounded(rows[shown], keep=("rank",))
    frame.insert(shown.index("rank") + 1 if "rank" in shown else 0, "tie",
                 ["=" if leaderboard._is_true(t) else "" for t in rows.get("rank_tie", [False] * len(rows))])
    links = record_links(records)
    frame["records"] = [links.get(tuple(r[k] for k in ("domain", "task", "model", "size", "tuning")), "")
                        for _, r in rows.iterrows()]
    return to_html_datatable(frame, table_id=table_id, **TABLE_OPTIONS)


def record_links(records: list[dict[str, Any]]) -> dict[tuple, str]:
    """Per leaderboard row (``records.key_of``): links to its records, 'seed 0 seed 1 ...', relative to
    the results folder (the report sits beside ``runs/``)."""
    links: dict[tuple, list[tuple[int, str]]] = {}
    for r in records_of(records):
        path = record_path(Path("."), r["domain"], r["task"], r["model"], r["size"], r["seed"], r["config_hash"])
        links.setdefault(key_of(r), []).append(
            (r["seed"], f'<a href="{html.escape(path.as_posix())}">seed {r["seed"]}</a>'))
    return {key: " ".join(link for _, link in sorted(found)) for key, found in links.items()}


def verdict_table(table: pd.DataFrame) -> str:
    """The verdicts: a table that leads with the answer (task, coordinate, A, B, the effect with its
    interval, the adjusted p and the verdict), and every column of verdicts.csv in a second table
    under a "details" switch."""
    lead = pd.DataFrame({
        "task": table["task"],
        "coordinate": [f"{coordinate(r)} [{r['family']}]" for _, r in table.iterrows()],
        "A": [_side(r, "a") for _, r in table.iterrows()],
        "B": [_side(r, "b") for _, r in table.iterrows()],
        "A - B [95% CI]": [f"{r['diff']:+.4f}" + (f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
                                                    if math.isfinite(number(r["ci_low"])) else "")
                           for _, r in table.iterrows()],
        "p (Holm)": [f"{fmt_p(r['p_holm'])} (of {int(r['family_size'])})" for _, r in table.iterrows()],
        "verdict": table["verdict"].fillna(""),
    })[VERDICT_LEAD]
    every = to_html_datatable(_rounded(table), table_id="verdict_details", **TABLE_OPTIONS)
    wrapping = {**TABLE_OPTIONS, "classes": "display compact", "scrollX": False}  # fits the page: no sideways scroll
    return (to_html_datatable(lead, table_id="verdict_table", **wrapping)
            + f'<details class="note"><summary>every column of verdicts.csv</summary>{every}</details>')


def _side(r: pd.Series, side: str) -> str:
    params = number(r.get(f"params_{side}"))
    return (f"{r[f'model_{side}']} {r[f'metric_{side}']:.4f} ({r[f'family_{side}']}, n={int(r[f'n_seeds_{side}'])}"
            + (f", {params / 1e3:,.0f}k" if math.isfinite(params) else "") + ")")


def _rounded(frame: pd.DataFrame, keep: tuple[str, ...] = ()) -> pd.DataFrame:
    """A copy with every float column but ``keep`` at 4 significant digits (still numbers, so that
    sorting stays numeric; NaN as empty)."""
    frame = frame.copy()
    for column in frame.columns:
        if column not in keep and pd.api.types.is_float_dtype(frame[column]):
            frame[column] = frame[column].map(lambda v: float(f"{v:.4g}") if math.isfinite(v) else None)
    return frame


# ------------------------------------------------------------------------------------- the page

def write_html(out: Path, board: pd.DataFrame, records: list[dict[str, Any]], table: pd.DataFrame | None,
               summary: list[str], how_to_read: str) -> Path:
    """Write ``out/report.html`` from the leaderboard ``board`` (``leaderboard.aggregate``), the
    successful ``records`` behind it, the verdict ``table`` and the summary lines of REPORT.md."""
    body = ['<h1>attention-zoo report</h1>']
    if board.empty:
        body.append("<p>No successful cell records yet: run <code>python -m harness run DOMAIN</code> first.</p>")
        return _write(out, body, with_scripts=False)
    domains = sorted(board["domain"].unique())
    body += ['<nav>' + "".join(f'<a href="#{_slug(d)}">{html.escape(d)}</a>' for d in domains)
             + '<a href="REPORT.md">REPORT.md (tuning and studies)</a></nav>',
             f'<p class="note">{_inline(how_to_read)}</p>',
             '<h2 id="verdicts">Verdicts: families of models compared</h2>',
             *(f"<p>{_inline(line)}</p>" for line in summary  # the prose: the table is the DataTable below
               if line.strip() and not line.lstrip().startswith("|")),
             verdict_table(table) if table is not None and not table.empty else "<p>No verdicts.</p>"]
    figure_count = 0
    for domain in domains:
        domain_rows = board[board["domain"] == domain]
        body += [f'<h2 id="{_slug(domain)}">{html.escape(domain)}</h2>',
                 leaderboard_table(domain_rows, records, f"leaderboard_{_slug(domain)}")]
        for task, rows in domain_rows.groupby("task", sort=True):
            task_records = [r for r in records if r["domain"] == domain and r["task"] == task]
            body.append(f'<h3 id="{_slug(domain)}-{_slug(task)}">{html.escape(domain)} / {html.escape(task)}</h3>')
            about = task_class(task).report.about
            body += [f"<p>{html.escape(about)}</p>"] if about else []
            body += [f"<p>{_inline(line)}</p>" for line in best_lines(rows)]
            figures = [figure_metric_vs_cost(rows, "param_count"), figure_metric_vs_cost(rows, "train_time_s"),
                       figure_learning_curves(task_records),
                       *(figure_example_table(task_records, name, *axes)
                         for name, axes in task_class(task).report.example_plots.items())]
            divs = []
            for fig in (f for f in figures if f is not None):
                figure_count += 1
                divs.append('<div class="figure">' + fig.to_html(
                    full_html=False, include_plotlyjs=False, div_id=f"figure-{figure_count}",
                    default_height="460px", config=PLOT_CONFIG) + "</div>")
            body.append('<div class="figures">' + "".join(divs) + "</div>")
    return _write(out, body, with_scripts=True)


def _write(out: Path, body: list[str], with_scripts: bool) -> Path:
    scripts = (f"<script>{get_plotlyjs()}</script>\n{generate_init_offline_itables_html(dt_bundle)}"
               if with_scripts else "")
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>attention-zoo report</title>\n<style>{STYLE}</style>\n{scripts}\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    path = Path(out) / "report.html"
    atomic_write_text(path, page)
    return path


def _inline(text: str) -> str:
    """REPORT.md's inline Markdown (``**bold**``, backticks, [text](link)) as HTML, the rest escaped."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', text)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(name))

