"""The report's tuning section: per task, every tuned model against its defaults (the paired test over
seeds and test items, ``stats.compare``), the values its study chose, and each model's optimisation
history (the validation metric of every counted trial, and the best so far). ``out/tuning.csv`` has
one row per tuned model:

====================  ===========================================================================
domain, task, model   the tuned row (size, tuning: e.g. 'tpe-8')
default_mean          the same model with its defaults (empty where that row is missing)
tuned_mean            tuned, mean over seeds
diff, ci_low/high, p  tuned - default, its 95% interval and two-sided p (empty where untested)
p_holm, verdict       Holm-adjusted over every tuned-vs-default row (the 'tuning effect' family of
                      ``verdicts``), and what it says: '<tuning> better', 'default better' or none
test                  'seeds and items' (the paired test), or why it is untested
chosen                the chosen values; chosen_trial the trial, default_won whether it was the defaults
best_val, default_val the validation metric of the chosen trial and of the defaults' trial
====================  ===========================================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from . import stats, verdicts
from .records import DEFAULT_TUNING, KEY, atomic_write_text
from .schema import finite
from .verdicts import Outcomes

NAMES = {"lr": "lr", "weight_decay": "wd", "warmup_frac": "warm-up", "dropout": "dropout"}
PALETTE = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def params_text(params: dict[str, float]) -> str:
    """'lr 2.5e-03, wd 0.21, warm-up 0.087, dropout 0.26'."""
    return ", ".join(f"{NAMES.get(k, k)} {v:.2e}" if k == "lr" else f"{NAMES.get(k, k)} {v:.2g}"
                     for k, v in params.items())


def tuned_records(records: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Per tuned leaderboard row (KEY), the study its records keep (the same in every seed's record)."""
    found = {}
    for r in records:
        if r.get("tuned") and r.get("tuning", DEFAULT_TUNING) != DEFAULT_TUNING:
            found[(*(r[k] for k in KEY[:-1]), r["tuning"])] = r["tuned"]
    return found


def table(board: pd.DataFrame, studies: dict[tuple, dict[str, Any]], outcomes: Outcomes) -> pd.DataFrame:
    """One row per tuned model: tuned against default (see the module's table)."""
    rows = []
    index = {tuple(r[k] for k in KEY): r for _, r in board.iterrows()}
    for key, study in sorted(studies.items(), key=lambda kv: tuple(map(str, kv[0]))):
        tuned = index.get(key)
        if tuned is None:
            continue
        default = index.get((*key[:-1], DEFAULT_TUNING))
        history = study.get("history", [])
        default_val = next((h["value"] for h in history if h.get("default")), math.nan)
        row = {**dict(zip(KEY, key)), "metric": tuned["metric"], "higher_is_better": bool(tuned["higher_is_better"]),
               "default_mean": math.nan if default is None else float(default["metric_mean"]),
               "tuned_mean": float(tuned["metric_mean"]), "n_seeds": int(tuned["n_seeds"]),
               "chosen": params_text(study["chosen"]), "chosen_trial": study["chosen_trial"],
               "default_won": any(h["trial"] == study["chosen_trial"] and h.get("default") for h in history),
               "best_val": study["chosen_value"], "default_val": default_val, "trials": study["trials"]}
        row.update(diff=row["tuned_mean"] - row["default_mean"], test="untested: no default row with per-item outcomes")
        if default is not None and key in outcomes and tuple(default[k] for k in KEY) in outcomes:
            try:
                c = stats.compare(outcomes[key], outcomes[tuple(default[k] for k in KEY)], row["higher_is_better"])
                row.update(diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
                           test=verdicts.TESTS[c.recipes])
            except ValueError:  # the two rows were scored on other test items
                row["test"] = "untested: scored on other test items"
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    judged = verdicts.judge(df.assign(model_a=df["tuning"], model_b=DEFAULT_TUNING, p_value=df.get("p_value"),
                                      test=df["test"].where(df["test"].isin(verdicts.TESTS.values()), verdicts.TESTS[None])))
    return df.assign(p_holm=judged["p_holm"].to_numpy(), verdict=judged["verdict"].to_numpy())


def plot_history(task: str, studies: list[tuple[str, dict[str, Any]]], metric: str, higher: bool) -> Figure:
    """Validation metric by trial, one colour per model: dots complete, crosses pruned, a star the
    defaults' trial, and a line through the best so far."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for i, (model, study) in enumerate(studies):
        colour = PALETTE[i % len(PALETTE)]
        points = [(n, h) for n, h in enumerate(study["history"], 1) if finite(h.get("value"))]
        for n, h in points:
            marker = "*" if h.get("default") else ("o" if h["state"] == "COMPLETE" else "x")
            ax.scatter(n, h["value"], marker=marker, color=colour, s=90 if h.get("default") else 30, zorder=3)
        best, line = None, []
        for n, h in points:
            if h["state"] == "COMPLETE" and (best is None or (h["value"] > best if higher else h["value"] < best)):
                best = h["value"]
            line.append((n, best))
        xs = [n for n, b in line if b is not None]
        ax.step(xs, [b for _, b in line if b is not None], where="post", color=colour,
                label=f"{model} ({study['tuning']})")
    ax.set_xlabel("trial (counted trials in order; star: the defaults, x: pruned)")
    ax.set_ylabel(f"validation {metric} ({'higher' if higher else 'lower'} is better)")
    ax.set_title(f"{task}: optimisation history\n(line: best complete trial so far)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def section(records: list[dict[str, Any]], board: pd.DataFrame, outcomes: Outcomes, out: Path,
            save_png) -> list[str]:
    """The Markdown lines of the tuning section (none where nothing was tuned); writes out/tuning.csv
    and the history plots (``save_png(fig, path)``)."""
    studies = tuned_records(records)
    df = table(board, studies, outcomes)
    if df.empty:
        return []
    atomic_write_text(out / "tuning.csv", df.to_csv(index=False, float_format="%.6g"))
    lines = ["## Tuning: every model tuned alike, against its defaults", "",
             "Each model had the same number of trials (`tuning` tpe-N: seeded TPE, median pruning, the first trial "
             "its defaults) under the task's budget, selected on the validation split; the chosen configuration "
             "then trained on the seeds. Tuned - default is the paired test over seeds and test items, Holm-adjusted "
             "over every tuned model of the report (the 'tuning effect' family).", ""]
    for (domain, task), rows in df.groupby(["domain", "task"], sort=True):
        lines += [f"### {domain} / {task} ({rows['metric'].iloc[0]})", "",
                  "| model | tuning | default | tuned | tuned - default [95% CI] | p | p (Holm) | verdict | chosen (trial) | val: defaults -> chosen |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in rows.iterrows():
            ci = f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if finite(r.get("ci_low")) else ""
            p = f"{r['p_value']:.2g}" if finite(r.get("p_value")) else "-"
            trial = "the defaults" if r["default_won"] else f"trial {r['chosen_trial']}"
            lines.append(f"| {r['model']} | {r['tuning']} | {_num(r['default_mean'])} | {_num(r['tuned_mean'])} "
                         f"(n={r['n_seeds']}) | {_signed(r['diff'])}{ci} | {p} | {verdicts.fmt_p(r['p_holm'])} | "
                         f"{r['verdict']} | {r['chosen']} ({trial}) | "
                         f"{_num(r['default_val'])} -> {_num(r['best_val'])} |")
        chosen = [(r["model"], studies[tuple(r[k] for k in KEY)]) for _, r in rows.iterrows()]
        name = f"{domain}_{task}_tuning.png"
        save_png(plot_history(task, chosen, rows["metric"].iloc[0], bool(rows["higher_is_better"].iloc[0])),
                 out / "plots" / name)
        lines += ["", f"![{task}: optimisation history](plots/{name})", ""]
    return lines



def _num(value: Any) -> str:
    return f"{value:.4f}" if finite(value) else "-"


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if finite(value) else "-"
