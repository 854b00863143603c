"""Tested verdicts: per task, size (or grid point) and tuning, the best transformer against the best
baseline (and any pair asked for), by the paired test of ``stats.compare``, Holm-adjusted across the
rows of a report. Rows are only compared with rows of the same size and tuning ('default', or e.g.
'tpe-8': the same trials each).

``results/verdicts.csv`` has one row per comparison:

==========================  ==================================================================
domain, task, metric        the task and its headline metric; higher_is_better its direction
tuning                      how both models' hyperparameters were chosen ('default', 'tpe-8', ...)
pair                        'best': the best transformer against the best baseline; 'requested'
model_a, size_a, family_a   A: the best transformer (or the first model of a requested pair)
model_b, size_b, family_b   B: the best model of any other family (or the second of the pair)
metric_a, metric_b          headline metric, mean over seeds
n_seeds_a, n_seeds_b        seeds behind each; n_items: paired test items (RL: episodes)
diff, ci_low, ci_high       A - B and its 95% interval
p_value, p_holm             two-sided p of the paired test, and Holm-adjusted across the rows
mde                         the difference the test finds with 80% power at 5% (same seeds, items)
df                          the test's degrees of freedom (Welch-Satterthwaite)
test                        'seeds and items' (both sides >= 2 seeds: a verdict on the training
                            recipes), 'items only' (one seed on a side: on these trained models,
                            provisional), 'untested' (no per-item outcomes in the records)
winner                      the better model by the Holm-adjusted p at 5%, '' where none
verdict                     the sentence: "A better", "B better" or "no detectable difference"
iqm_a, iqm_a_low, _high     where the task summarises seeds robustly (offline RL): the interquartile
iqm_b, iqm_b_low, _high     mean of the per-seed scores with its stratified-bootstrap 95% interval
==========================  ==================================================================
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from tasks import get_task_class
from tasks.base import Task
from zoo.registry import SIZES, RegistryError

from . import stats
from .leaderboard import NO_FAMILY, Outcomes
from .records import DEFAULT_TUNING, KEY, atomic_write_text

TESTS = {True: "seeds and items", False: "items only", None: "untested"}
COLUMNS = ["domain", "task", "tuning", "pair", "metric", "higher_is_better", "model_a", "size_a", "family_a", "model_b", "size_b",
           "family_b", "metric_a", "metric_b", "n_seeds_a", "n_seeds_b", "n_items", "diff", "ci_low", "ci_high",
           "p_value", "p_holm", "mde", "df", "test", "winner", "verdict",
           "iqm_a", "iqm_a_low", "iqm_a_high", "iqm_b", "iqm_b_low", "iqm_b_high"]


def task_class(name: str) -> type[Task]:
    """The registered task class of ``name``; the base class for a task that is not registered here
    (a record made with a plugin that is not loaded)."""
    try:
        return get_task_class(name)
    except RegistryError:
        return Task


def best_pair(task_rows: pd.DataFrame) -> tuple[pd.Series, pd.Series] | None:
    """The best transformer and the best model of any other named family (the 'baseline') among one
    task's leaderboard rows, by rank; None where the task lacks either."""
    def best(transformer: bool) -> pd.Series | None:
        family = task_rows["family"]
        named = family.notna() & (family != NO_FAMILY)  # a record without a family is neither
        rows = task_rows[named & ((family == "transformer") == transformer) & task_rows["metric_mean"].notna()]
        return None if rows.empty else rows.sort_values(["rank", "model"]).iloc[0]

    t, b = best(True), best(False)
    return None if t is None or b is None else (t, b)


def row_pairs(board: pd.DataFrame, pairs: Iterable[tuple[str, str]] = ()) -> list[tuple[str, pd.Series, pd.Series]]:
    """Per task, size (grid point) and tuning: ('best', the best transformer, the best baseline), then
    ('requested', A, B) for each requested pair of model names that it has."""
    out = []
    if "tuning" not in board.columns:
        board = board.assign(tuning=DEFAULT_TUNING)
    for _, rows in board.groupby(["domain", "task", "size", "tuning"], sort=True):
        found = best_pair(rows)
        chosen = [("best", *found)] if found else []
        for a, b in pairs:
            ra, rb = rows[rows["model"] == a].sort_values("rank"), rows[rows["model"] == b].sort_values("rank")
            if len(ra) and len(rb):
                pair = ("requested", ra.iloc[0], rb.iloc[0])
                if not any(_key(p[1]) == _key(pair[1]) and _key(p[2]) == _key(pair[2]) for p in chosen):
                    chosen.append(pair)
        out += chosen
    return out


def _key(row: pd.Series) -> tuple:
    return tuple(row[k] for k in KEY)


def verdict_row(a: pd.Series, b: pd.Series, outcomes: Outcomes) -> dict[str, Any]:
    """One comparison, untested where either row has no per-item outcomes."""
    higher = bool(a["higher_is_better"])
    row = {"domain": a["domain"], "task": a["task"], "tuning": a.get("tuning", DEFAULT_TUNING), "metric": a["metric"],
           "higher_is_better": higher,
           **{f"{c}_{side}": r[c] for side, r in (("a", a), ("b", b)) for c in ("model", "size", "family")},
           "metric_a": float(a["metric_mean"]), "metric_b": float(b["metric_mean"]),
           "n_seeds_a": int(a["n_seeds"]), "n_seeds_b": int(b["n_seeds"]),
           "diff": float(a["metric_mean"]) - float(b["metric_mean"]), "test": TESTS[None]}
    oa, ob = outcomes.get(_key(a)), outcomes.get(_key(b))
    if oa is None or ob is None:
        return row
    try:
        c = stats.compare(oa, ob, higher)
    except ValueError:  # scored on other items: untested
        return row
    row.update(n_items=c.n_items, diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value, mde=c.mde,
               df=c.df, test=TESTS[c.recipes])
    if task_class(a["task"]).report_iqm:
        for side, o in (("a", oa), ("b", ob)):
            low, high = stats.iqm_interval(o.per_seed())
            row.update({f"iqm_{side}": stats.iqm(o.per_seed()), f"iqm_{side}_low": low, f"iqm_{side}_high": high})
    return row


def verdicts(board: pd.DataFrame, outcomes: Outcomes, pairs: Iterable[tuple[str, str]] = (),
             alpha: float = stats.ALPHA) -> pd.DataFrame:
    """The verdict table of a leaderboard (any domains): tested rows Holm-adjusted together."""
    rows = [{"pair": kind, **verdict_row(a, b, outcomes)} for kind, a, b in row_pairs(board, pairs)]
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    if df.empty:
        return df
    df["p_holm"] = stats.holm(pd.to_numeric(df["p_value"], errors="coerce").tolist())
    winners, sentences = [], []
    for _, r in df.iterrows():
        winner = _winner(r, alpha)
        winners.append(winner or "")
        sentences.append(_sentence(r, winner))
    return df.assign(winner=winners, verdict=sentences)


def _winner(r: pd.Series, alpha: float) -> str | None:
    p = r["p_holm"]
    if r["test"] == TESTS[None] or not (p < alpha) or r["diff"] == 0:
        return None
    return r["model_a"] if (r["diff"] > 0) == bool(r["higher_is_better"]) else r["model_b"]


def _sentence(r: pd.Series, winner: str | None) -> str:
    if r["test"] == TESTS[None]:
        return "untested (no per-item outcomes)"
    return stats.verdict_sentence(winner, r["test"] == TESTS[True])


def write(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


# --------------------------------------------------------------------------------- words for people

def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def p_text(p: float) -> str:
    """'p = 0.031', 'p < 1e-4'."""
    shown = fmt_p(p)
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def summary_lines(df: pd.DataFrame) -> list[str]:
    """The report's summary: one line per comparison, then the count of tested verdicts."""
    if df.empty:
        return ["No task has both a transformer and a baseline yet."]
    lines = ["| domain | task | tuning | metric | A | B | A - B [95% CI] | p | p (Holm) | MDE | test | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in df.iterrows():
        ci = f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(_float(r["ci_low"])) else ""
        lines.append(f"| {r['domain']} | {r['task']} | {r['tuning']} | {r['metric']} ({'higher' if r['higher_is_better'] else 'lower'}"
                     f" is better) | {_side(r, 'a')} | {_side(r, 'b')} | {r['diff']:+.4f}{ci} | {fmt_p(_float(r['p_value']))} "
                     f"| {fmt_p(_float(r['p_holm']))} | {_num(r['mde'])} | {r['test']} | {r['verdict']} |")
    for tuning, main in _headline(df).groupby("tuning", sort=False):  # one verdict per task
        lines += ["", *_counts(main, str(tuning))]
    return lines


def _headline(df: pd.DataFrame) -> pd.DataFrame:
    """The transformer-vs-baseline row of each task and tuning that the summary counts: the only one,
    or where a study ran a grid (sizes, --params, --train-fraction) the one at a preset size; a grid
    without one is left to the report's study section."""
    best = df[df["pair"] == "best"]
    keep = []
    for _, rows in best.groupby(["domain", "task", "tuning"], sort=False):
        plain = rows if len(rows) == 1 else rows[rows["size_a"].isin(SIZES) & (rows["size_a"] == rows["size_b"])]
        if len(plain) == 1:
            keep.append(plain)
    return pd.concat(keep) if keep else best.iloc[:0]


def _counts(main: pd.DataFrame, tuning: str) -> list[str]:
    """The count of one tuning's tested transformer-vs-baseline verdicts."""
    tested = main[main["test"] != TESTS[None]]
    won = {f: int(sum((tested["winner"] == tested[f"model_{s}"]) & (tested["winner"] != ""))) for f, s in
           (("transformer", "a"), ("baseline", "b"))}
    none = int((tested["winner"] == "").sum())
    provisional = int((tested["test"] == TESTS[False]).sum())
    how = "with each model's default hyperparameters" if tuning == DEFAULT_TUNING else \
        f"with every model tuned alike ({tuning})"
    return [f"**Tested verdicts {how} (paired test over seeds and test items, Holm-adjusted across all rows, 5% "
            f"level): transformers better on {won['transformer']}, baselines better on {won['baseline']}, no "
            f"detectable difference on {none} of {len(tested)} tasks.**",
            f"{len(main) - len(tested)} task(s) untested (records without per-item outcomes); {provisional} of the "
            f"tested compare single-seed trained models (provisional: they say nothing of the training recipes)."]


def run_lines(df: pd.DataFrame) -> list[str]:
    """What a run prints under its leaderboard: one line per task's verdict (single seeds: provisional)."""
    lines = []
    for _, r in df.iterrows():
        ci = f" [95% CI {r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(_float(r["ci_low"])) else ""
        p = f", {p_text(_float(r['p_value']))} (Holm {fmt_p(_float(r['p_holm']))})" if r["test"] != TESTS[None] else ""
        tuned = "" if r["tuning"] == DEFAULT_TUNING else f" ({r['tuning']})"
        lines.append(f"verdict {r['task']}{tuned}: {r['model_a']} - {r['model_b']} = {r['diff']:+.4f}{ci}{p}: {r['verdict']}")
    return lines


def _side(r: pd.Series, side: str) -> str:
    text = f"{r[f'model_{side}']} {r[f'metric_{side}']:.4f} (n={int(r[f'n_seeds_{side}'])})"
    if math.isfinite(_float(r.get(f"iqm_{side}"))):
        text += f", IQM {r[f'iqm_{side}']:.2f} [{r[f'iqm_{side}_low']:.2f}, {r[f'iqm_{side}_high']:.2f}]"
    return text


def _num(value: Any) -> str:
    v = _float(value)
    return f"{v:.4f}" if math.isfinite(v) else "-"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def describe(c: stats.Comparison, a: stats.Outcomes, b: stats.Outcomes, label: str, iqm: bool) -> list[str]:
    """``harness compare``'s text: each model's metric and interval, the difference, the test, the verdict."""
    width = max(len(a.model), len(b.model))
    lines = [f"{label}; {c.n_items} paired test items"]
    for o in (a, b):
        low, high = stats.interval(o)
        line = f"  {o.model:<{width}}  {o.metric():.4f}  95% CI [{low:.4f}, {high:.4f}]  ({o.n_seeds} seed(s): " \
               f"{' '.join(map(str, o.seeds))})"
        if iqm:
            lo, hi = stats.iqm_interval(o.per_seed())
            line += f"; IQM {stats.iqm(o.per_seed()):.4f} [{lo:.4f}, {hi:.4f}] (stratified bootstrap)"
        lines.append(line)
    how = "seeds and test items" if c.recipes else "test items only: one seed on a side"
    lines += [f"  difference {a.model} - {b.model}: {c.diff:+.4f}, 95% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
              f"{p_text(c.p_value)} (paired t over {how}; {c.df:.1f} df)",
              f"  minimum detectable effect (80% power, alpha {c.alpha:g}): {c.mde:.4f}",
              f"verdict: {c.verdict}"]
    return lines

