"""The one place that decides what a comparison means.

``stats`` computes (a difference, its interval, a p-value); this module decides: which model is
better, which rows of a leaderboard tie with its leader, and which comparisons form a family whose
p-values are adjusted together (Holm). Every screen that shows a verdict or a tie gets it from here:
the run's terminal line and ``harness compare``, the leaderboards' ranks, ``verdicts.csv``,
REPORT.md and report.html, the studies' crossover and the tuning table. No other module compares a
p-value with alpha (``tests/test_verdicts.py`` checks that with a grep).

Families are declared, never accidental. A coordinate of a task is (size, tuning): the size label
says the grid point (``tiny``, ``tiny@300k`` for ``--params``, ``tiny_f0.1`` for
``--train-fraction``). Each comparison belongs to exactly one family:

- ``headline``: per task, the default hyper-parameters at its headline size (the first preset of
  ``tiny``, ``small``, ``base`` that it has, all the training data): one coordinate per task;
- ``tuned <tuning>`` (e.g. ``tuned tpe-8``): every model tuned alike, at the task's first preset size;
- ``study <task>`` (``study <task> <tuning>``): every other grid point of the task, one family per
  task and tuning, so that a study never moves a headline or a tuned verdict;
- ``requested``: the pairs asked for with ``--pair A,B`` that no family above holds.

At a coordinate, the families of models (``family`` of the registry: transformer, ssm, baseline, ...;
any string) are compared pairwise: the best model of each family against the best of each other
family, transformer first, then ssm, then the rest in alphabetical order. The best of a family is
chosen on the **validation** metric at the end of training (mean over seeds), never on test: the
test split only tests. A comparison that appears twice in one family (the same rows) counts once.

``results/verdicts.csv`` has one row per comparison:

==========================  ==================================================================
family, family_size         its declared family and how many tested comparisons Holm adjusts over
domain, task, metric        the task and its headline metric; higher_is_better its direction
size, tuning                the coordinate: size label (grid point) and how hyper-parameters were
                            chosen ('default', 'tpe-8', ...); train_fraction the share of training data
pair                        'families': the best of family_a against the best of family_b;
                            'requested': a pair asked for with --pair
model_a, family_a, params_a A (and B): the model, its family and its trainable parameters
chosen_on                   how the best of each family was chosen: 'validation' (the mean final
                            validation metric), or 'test' where the records keep no validation metric
metric_a, metric_b          headline test metric, mean over seeds; val_a, val_b the validation metric
n_seeds_a, n_seeds_b        seeds behind each; n_items: paired test items (RL: episodes)
diff, ci_low, ci_high       A - B and its (unadjusted) 95% interval
p_value, p_holm             two-sided p of the paired test, and Holm-adjusted within the family
mde                         the difference the test finds with 80% power at 5% (same seeds, items)
df                          the test's degrees of freedom (Welch-Satterthwaite)
test                        'seeds and items' (both sides >= 2 seeds: a verdict on the training
                            recipes), 'items only' (one seed on a side: on these trained models,
                            provisional), 'untested' (no per-item outcomes in the records)
winner                      the better model by the Holm-adjusted p at 5%, '' where none
verdict                     the sentence: "A better", "B better" or "no detectable difference"
note                        why a difference that the raw p finds is not a verdict (Holm), or ''
iqm_a, iqm_a_low, _high     where the task summarises seeds robustly (offline RL): the interquartile
iqm_b, iqm_b_low, _high     mean of the per-seed scores with its stratified-bootstrap 95% interval
==========================  ==================================================================
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind_from_stats

from tasks import get_task_class
from tasks.base import Task
from zoo.registry import SIZES, RegistryError

from . import stats
from .records import DEFAULT_TUNING, KEY, atomic_write_text
from .schema import NO_FAMILY, number

ALPHA = stats.ALPHA
FAMILY_ORDER = ("transformer", "ssm")  # then every other family in alphabetical order
HEADLINE = "headline"
REQUESTED = "requested"
TESTS = {True: "seeds and items", False: "items only", None: "untested"}
PROVISIONAL = " (provisional: one seed compares trained models, not recipes)"
COLUMNS = ["family", "family_size", "domain", "task", "size", "tuning", "train_fraction", "pair", "metric",
           "higher_is_better", "model_a", "family_a", "params_a", "model_b", "family_b", "params_b", "chosen_on",
           "metric_a", "metric_b", "val_a", "val_b", "n_seeds_a", "n_seeds_b", "n_items", "diff", "ci_low",
           "ci_high", "p_value", "p_holm", "mde", "df", "test", "winner", "verdict", "note",
           "iqm_a", "iqm_a_low", "iqm_a_high", "iqm_b", "iqm_b_low", "iqm_b_high"]

Outcomes = dict[tuple, stats.Outcomes]  # per leaderboard row (records.KEY), its seeds' per-item outcomes


def task_class(name: str) -> type[Task]:
    """The registered task class of ``name``; the base class for a task that is not registered here
    (a record made with a plugin that is not loaded)."""
    try:
        return get_task_class(name)
    except RegistryError:
        return Task


# ------------------------------------------------------------------------------------ the decision

def better_side(diff: float, p: float, higher_is_better: bool, alpha: float = ALPHA) -> str | None:
    """'a' or 'b' where the test rejects "no difference" at ``alpha`` (the sign of A - B says who),
    None where it does not. The only comparison of a p-value with alpha in attention-zoo."""
    if not (p < alpha) or diff == 0 or not math.isfinite(diff):
        return None
    return "a" if (diff > 0) == bool(higher_is_better) else "b"


def sentence(winner: str | None, recipes: bool = True) -> str:
    """'vit better', 'no detectable difference', + PROVISIONAL where a side has a single seed."""
    return (f"{winner} better" if winner else "no detectable difference") + ("" if recipes else PROVISIONAL)


def adjust(p_values: Iterable[float]) -> list[float]:
    """Holm's adjustment over one declared family (NaN: untested, not counted)."""
    return stats.holm(list(p_values))


def decided(c: stats.Comparison, p: float | None = None, alpha: float = ALPHA) -> str:
    """The sentence for a comparison at p-value ``p`` (its own raw p by default)."""
    side = better_side(c.diff, c.p_value if p is None else p, c.higher_is_better, alpha)
    return sentence({"a": c.a, "b": c.b}.get(side or ""), c.recipes)


# ------------------------------------------------------------------------------- two rows, one test

def row_key(row: pd.Series) -> tuple:
    return tuple(row[k] for k in KEY)


def paired(a: pd.Series, b: pd.Series, outcomes: Outcomes, alpha: float = ALPHA) -> stats.Comparison | None:
    """The paired test of two leaderboard rows from their per-item outcomes; None where either has
    none or they were scored on other items."""
    oa, ob = outcomes.get(row_key(a)), outcomes.get(row_key(b))
    if oa is None or ob is None:
        return None
    try:
        return stats.compare(oa, ob, bool(a["higher_is_better"]), alpha)
    except ValueError:  # scored on other items
        return None



def row_p(a: pd.Series, b: pd.Series, outcomes: Outcomes) -> float:
    """The two-sided p of A vs B: the paired test where both rows keep per-item outcomes, else Welch's
    t over seeds (a leaderboard written before outcomes were kept); NaN where neither can run."""
    c = paired(a, b, outcomes)
    if c is not None:
        return c.p_value
    std_a, std_b = number(a.get("metric_std")), number(b.get("metric_std"))
    if not (number(a["n_seeds"]) >= 2 and number(b["n_seeds"]) >= 2 and math.isfinite(std_a + std_b)):
        return math.nan
    if std_a == 0 and std_b == 0:
        return 1.0 if a["metric_mean"] == b["metric_mean"] else 0.0
    return float(ttest_ind_from_stats(a["metric_mean"], std_a, a["n_seeds"], b["metric_mean"], std_b,
                                      b["n_seeds"], equal_var=False).pvalue)


def task_bounds(outcomes: Outcomes) -> dict[tuple, tuple[float, float]]:
    """Per (domain, task): the range of values its items take across every row's outcomes, where the
    headline is a mean over items (unit weights; not a ratio such as WER): the bounds that an
    interval of a mean over those items cannot leave."""
    bounds: dict[tuple, tuple[float, float]] = {}
    for key, o in outcomes.items():
        if np.all(o.weight == 1) and o.value.size:
            lo, hi = float(o.value.min()), float(o.value.max())
            old = bounds.get(key[:2], (lo, hi))
            bounds[key[:2]] = (min(lo, old[0]), max(hi, old[1]))
    return bounds


def bounds_of(o: stats.Outcomes, task_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """The bounds ``stats.interval`` may widen ``o``'s interval to: [0, 1] for 0/1 outcomes; for a
    mean over items whose every item and seed gave the same value (a row at a ceiling: every episode
    at the best return), the range the task's items take; else None (the variance is estimated)."""
    if o.binary():
        return 0.0, 1.0
    return task_range if np.all(o.weight == 1) and np.ptp(o.value) == 0 else None


def leader_ties(group: pd.DataFrame, outcomes: Outcomes, alpha: float = ALPHA) -> pd.Series:
    """Per row of one leaderboard group (a task at one size and tuning, best first by ``rank``):
    True where the paired test cannot tell the row from the leader (Holm over the group's tests
    against the leader), and True for the leader where some row ties with it. A row that cannot be
    tested (one seed and no per-item outcomes) is not marked."""
    ordered = group.sort_values(["rank", "model"], kind="stable")
    leader = ordered.iloc[0]
    others = ordered.iloc[1:]
    p = adjust(row_p(leader, r, outcomes) for _, r in others.iterrows())
    diffs = others["metric_mean"].astype(float) - float(leader["metric_mean"])
    tie = pd.Series(False, index=group.index)
    for (i, _), q, d in zip(others.iterrows(), p, diffs):
        tie[i] = math.isfinite(q) and better_side(-d, q, bool(leader["higher_is_better"]), alpha) is None
    tie[ordered.index[0]] = bool(tie.any())
    return tie


# ------------------------------------------------------------------------------------------ families

def preset_of(size: str) -> str | None:
    """The preset a plain size label names ('tiny'); None for a grid point ('tiny@300k', 'tiny_f0.1')."""
    return size if size in SIZES else None


def family_of(task_rows: pd.DataFrame, size: str, tuning: str) -> str:
    """The declared family of a coordinate (size, tuning) of one task, from the task's rows."""
    plain = [s for s in SIZES if s in set(task_rows.loc[task_rows["tuning"] == tuning, "size"])]
    if plain and size == plain[0]:
        return HEADLINE if tuning == DEFAULT_TUNING else f"tuned {tuning}"
    task = task_rows["task"].iloc[0]
    return f"study {task}" + ("" if tuning == DEFAULT_TUNING else f" {tuning}")


def family_pairs(families: Iterable[str]) -> list[tuple[str, str]]:
    """Every pair of the model families present, transformer first, then ssm, then alphabetical."""
    present = sorted({f for f in families if isinstance(f, str) and f and f != NO_FAMILY},
                     key=lambda f: (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f))
    return list(itertools.combinations(present, 2))


def validation_key(row: pd.Series) -> float:
    """Larger is better: the row's mean final validation metric, signed by the metric's direction."""
    v = number(row.get("val_metric_mean"))
    return v if bool(row["higher_is_better"]) else -v


def best_of(rows: pd.DataFrame, family: str) -> tuple[pd.Series, str] | None:
    """The best row of ``family`` among one coordinate's rows, chosen on validation (the test metric
    only where no row of the family has a validation metric), and what it was chosen on."""
    mine = rows[(rows["family"] == family) & rows["metric_mean"].notna()]
    if mine.empty:
        return None
    val = mine.apply(validation_key, axis=1) if "val_metric_mean" in mine.columns else pd.Series(math.nan, mine.index)
    if val.notna().any():
        ordered = mine.assign(_val=val).sort_values(["_val", "model"], ascending=[False, True], na_position="last")
        return ordered.drop(columns="_val").iloc[0], "validation"
    return mine.sort_values(["rank", "model"]).iloc[0], "test"


@dataclass
class Comparisons:
    """The comparisons of one declared family, each (pair kind, A, B, what the best was chosen on)."""

    name: str
    rows: list[tuple[str, pd.Series, pd.Series, str]] = field(default_factory=list)

    def add(self, kind: str, a: pd.Series, b: pd.Series, chosen_on: str) -> None:
        if not self.holds(a, b):
            self.rows.append((kind, a, b, chosen_on))  # the same comparison counts once in a family

    def holds(self, a: pd.Series, b: pd.Series) -> bool:
        """Whether this family compares these two rows already (in either order)."""
        return any({row_key(a), row_key(b)} == {row_key(x), row_key(y)} for _, x, y, _ in self.rows)


def families(board: pd.DataFrame, pairs: Iterable[tuple[str, str]] = ()) -> list[Comparisons]:
    """The declared families of a leaderboard (any domains): see the module docstring."""
    if "tuning" not in board.columns:
        board = board.assign(tuning=DEFAULT_TUNING)
    found: dict[str, Comparisons] = {}
    requested = Comparisons(REQUESTED)
    for (_, task), task_rows in board.groupby(["domain", "task"], sort=True):
        for (size, tuning), rows in task_rows.groupby(["size", "tuning"], sort=True):
            name = family_of(task_rows, str(size), str(tuning))
            family = found.setdefault(name, Comparisons(name))
            for fa, fb in family_pairs(rows["family"]):
                best_a, best_b = best_of(rows, fa), best_of(rows, fb)
                if best_a and best_b:
                    chosen_on = "validation" if best_a[1] == best_b[1] == "validation" else "test"
                    family.add("families", best_a[0], best_b[0], chosen_on)
            for model_a, model_b in pairs:
                ra, rb = rows[rows["model"] == model_a], rows[rows["model"] == model_b]
                if len(ra) and len(rb) and not any(f.holds(ra.iloc[0], rb.iloc[0]) for f in found.values()):
                    requested.add(REQUESTED, ra.iloc[0], rb.iloc[0], "requested")
    order = sorted(found.values(), key=lambda f: (f.name != HEADLINE, not f.name.startswith("tuned"), f.name))
    return [f for f in order + [requested] if f.rows]


# --------------------------------------------------------------------------------------- the table

def comparison_row(a: pd.Series, b: pd.Series, outcomes: Outcomes) -> dict[str, Any]:
    """One comparison's numbers, untested where either row has no per-item outcomes."""
    higher = bool(a["higher_is_better"])
    row = {"domain": a["domain"], "task": a["task"], "size": a["size"], "tuning": a.get("tuning", DEFAULT_TUNING),
           "train_fraction": number(a.get("train_fraction")), "metric": a["metric"], "higher_is_better": higher,
           **{f"{c}_{side}": r[c] for side, r in (("a", a), ("b", b)) for c in ("model", "family")},
           "params_a": a.get("param_count"), "params_b": b.get("param_count"),
           "metric_a": float(a["metric_mean"]), "metric_b": float(b["metric_mean"]),
           "val_a": number(a.get("val_metric_mean")), "val_b": number(b.get("val_metric_mean")),
           "n_seeds_a": int(a["n_seeds"]), "n_seeds_b": int(b["n_seeds"]),
           "diff": float(a["metric_mean"]) - float(b["metric_mean"]), "test": TESTS[None]}
    c = paired(a, b, outcomes)
    if c is None:
        return row
    row.update(n_items=c.n_items, diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value, mde=c.mde,
               df=c.df, test=TESTS[c.recipes])
    task_range = task_bounds(outcomes).get((a["domain"], a["task"]))
    oa, ob = outcomes[row_key(a)], outcomes[row_key(b)]
    if c.se == 0:  # no variance at all (both at a ceiling): the difference of the rows' own intervals
        (la, ha), (lb, hb) = (stats.interval(o, bounds=bounds_of(o, task_range)) for o in (oa, ob))
        row.update(ci_low=min(c.ci_low, la - hb), ci_high=max(c.ci_high, ha - lb))
    if task_class(a["task"]).report.report_iqm:
        for side, o in (("a", oa), ("b", ob)):
            low, high = stats.iqm_interval(o.per_seed())
            edges = bounds_of(o, task_range)
            if edges is not None and edges[1] > edges[0]:  # as stats.interval: never a point at a ceiling
                share = (stats.iqm(o.per_seed()) - edges[0]) / (edges[1] - edges[0])
                w_low, w_high = stats.wilson(min(max(share, 0.0), 1.0), o.n_items)
                low = min(low, edges[0] + w_low * (edges[1] - edges[0]))
                high = max(high, edges[0] + w_high * (edges[1] - edges[0]))
            row.update({f"iqm_{side}": stats.iqm(o.per_seed()), f"iqm_{side}_low": low, f"iqm_{side}_high": high})
    return row


def judge(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Rows of one family (diff, p_value, test, higher_is_better, model_a, model_b): their Holm-adjusted
    p, family size, winner, verdict sentence and note."""
    df = df.reset_index(drop=True)
    p = pd.to_numeric(df["p_value"], errors="coerce") if "p_value" in df.columns else pd.Series(math.nan, df.index)
    holm = adjust(p.tolist())
    size = int(p.notna().sum())
    winners, verdict_texts, notes = [], [], []
    for (_, r), q, raw in zip(df.iterrows(), holm, p):
        side = better_side(r["diff"], q, bool(r["higher_is_better"]), alpha) if r["test"] != TESTS[None] else None
        winner = {"a": r["model_a"], "b": r["model_b"]}.get(side or "", "")
        winners.append(winner)
        verdict_texts.append("untested (no per-item outcomes)" if r["test"] == TESTS[None]
                             else sentence(winner or None, r["test"] == TESTS[True]))
        raw_side = better_side(r["diff"], raw, bool(r["higher_is_better"]), alpha) if math.isfinite(raw) else None
        notes.append(f"significant before Holm's adjustment (p = {fmt_p(raw)})" if raw_side and not side else "")
    return df.assign(p_holm=holm, family_size=size, winner=winners, verdict=verdict_texts, note=notes)


def table(board: pd.DataFrame, outcomes: Outcomes, pairs: Iterable[tuple[str, str]] = (),
          alpha: float = ALPHA) -> pd.DataFrame:
    """The verdict table of a leaderboard (any domains): every declared family, Holm within each."""
    parts = []
    for family in families(board, pairs):
        rows = [{"family": family.name, "pair": kind, "chosen_on": chosen_on, **comparison_row(a, b, outcomes)}
                for kind, a, b, chosen_on in family.rows]
        parts.append(judge(pd.DataFrame(rows).reindex(columns=COLUMNS), alpha))
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)


def write(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


def swapped(row: pd.Series) -> pd.Series:
    """A verdict row with A and B exchanged (A - B and its interval negated; the verdict is the same)."""
    out = row.copy()
    for name in ("model", "family", "params", "metric", "val", "n_seeds", "iqm", "iqm_{}_low", "iqm_{}_high"):
        a, b = (name.format(s) if "{}" in name else f"{name}_{s}" for s in ("a", "b"))
        out[a], out[b] = row.get(b), row.get(a)
    out["diff"], out["ci_low"], out["ci_high"] = -row["diff"], -number(row["ci_high"]), -number(row["ci_low"])
    return out


def rows_for(df: pd.DataFrame, task: str, size: str | None = None, tuning: str | None = None) -> pd.DataFrame:
    """The verdict rows of one task (at one size and tuning where given)."""
    keep = df["task"] == task
    if size is not None:
        keep &= df["size"] == size
    if tuning is not None:
        keep &= df["tuning"] == tuning
    return df[keep]


# --------------------------------------------------------------------------------- words for people

def fmt_p(p: float) -> str:
    p = number(p)
    if not math.isfinite(p):
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def p_text(p: float) -> str:
    """'p = 0.031', 'p < 1e-4'."""
    shown = fmt_p(p)
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


def coordinate(r: pd.Series) -> str:
    """'tiny', 'tiny_f0.1 (10% of the training data)', with the tuning where it is not the default."""
    text = str(r["size"])
    fraction = number(r.get("train_fraction"))
    if math.isfinite(fraction) and fraction < 1:
        text += f" ({fraction:.0%} of the training data)"
    return text + ("" if r.get("tuning", DEFAULT_TUNING) == DEFAULT_TUNING else f", {r['tuning']}")


def summary_lines(df: pd.DataFrame) -> list[str]:
    """The report's summary: per family, one line per comparison, then the counts of the headline and
    tuned families."""
    if df.empty:
        return ["No task has models of two families yet."]
    lines = []
    for name, rows in df.groupby("family", sort=False):
        lines += ["", f"**{name}** ({int(rows['family_size'].iloc[0])} tested comparisons, Holm-adjusted together)", "",
                  "| task | size | tuning | data | A (params) | B (params) | A - B [95% CI] | p | p (Holm) | verdict | MDE | test |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in rows.iterrows():
            ci = f" [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(number(r["ci_low"])) else ""
            note = f" ({r['note']})" if isinstance(r.get("note"), str) and r["note"] else ""
            lines.append(f"| {r['task']} | {r['size']} | {r['tuning']} | {_fraction(r)} | {_side(r, 'a')} | "
                         f"{_side(r, 'b')} | {r['diff']:+.4f}{ci} | {fmt_p(r['p_value'])} | {fmt_p(r['p_holm'])} | "
                         f"**{r['verdict']}**{note} | {_num(r['mde'])} | {r['test']} |")
        if name == HEADLINE or str(name).startswith("tuned"):
            lines += ["", *counts(rows, str(name))]
    return lines[1:]


def counts(rows: pd.DataFrame, name: str) -> list[str]:
    """The count of one family's tested verdicts, per pair of model families."""
    out = []
    tested = rows[rows["test"] != TESTS[None]]
    for (fa, fb), pair in tested.groupby(["family_a", "family_b"], sort=False):
        won_a = int(((pair["winner"] == pair["model_a"]) & (pair["winner"] != "")).sum())
        won_b = int(((pair["winner"] == pair["model_b"]) & (pair["winner"] != "")).sum())
        none = int((pair["winner"] == "").sum())
        provisional = int((pair["test"] == TESTS[False]).sum())
        out.append(f"**{name}, {fa} vs {fb} (paired test over seeds and test items, Holm-adjusted within the family, "
                   f"5% level): {fa} better on {won_a}, {fb} better on {won_b}, no detectable difference on {none} of "
                   f"{len(pair)} tasks.**" + (f" {provisional} of them compare single-seed trained models (provisional)."
                                              if provisional else ""))
    untested = len(rows) - len(tested)
    return out + ([f"{untested} comparison(s) untested (records without per-item outcomes)."] if untested else [])


def run_line(r: pd.Series) -> str:
    """One verdict row as the terminal shows it, the same numbers as verdicts.csv."""
    ci = f" [95% CI {r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(number(r["ci_low"])) else ""
    where = f"{r['task']} ({coordinate(r)}; {r['family']}, {int(r['family_size'])} comparisons)"
    if r["test"] == TESTS[None]:
        return f"verdict {where}: {r['model_a']} - {r['model_b']} = {r['diff']:+.4f}: {r['verdict']}"
    note = " (significant before the adjustment)" if isinstance(r.get("note"), str) and r["note"] else ""
    return (f"verdict {where}: {r['model_a']} - {r['model_b']} = {r['diff']:+.4f}{ci}, {p_text(r['p_value'])}, "
            f"Holm-adjusted {fmt_p(r['p_holm'])}: {r['verdict']}{note}")


def run_lines(df: pd.DataFrame) -> list[str]:
    return [run_line(r) for _, r in df.iterrows()]


def _fraction(r: pd.Series) -> str:
    f = number(r.get("train_fraction"))
    return "all" if not math.isfinite(f) or f >= 1 else f"{f:.0%}"


def _side(r: pd.Series, side: str) -> str:
    params = number(r.get(f"params_{side}"))
    text = f"{r[f'model_{side}']} {r[f'metric_{side}']:.4f} (n={int(r[f'n_seeds_{side}'])}" + \
        (f", {params / 1e3:,.0f}k" if math.isfinite(params) else "") + ")"
    if math.isfinite(number(r.get(f"iqm_{side}"))):
        text += f", IQM {r[f'iqm_{side}']:.2f} [{r[f'iqm_{side}_low']:.2f}, {r[f'iqm_{side}_high']:.2f}]"
    return text


def _num(value: Any) -> str:
    v = number(value)
    return f"{v:.4f}" if math.isfinite(v) else "-"


def describe(c: stats.Comparison, a: stats.Outcomes, b: stats.Outcomes, label: str, iqm: bool,
             family_row: pd.Series | None, task_range: tuple[float, float] | None = None) -> list[str]:
    """``harness compare``'s text: each model's metric and interval, the difference, the raw verdict
    and, where the pair is a row of a declared family, its adjusted verdict (the one verdicts.csv holds)."""
    width = max(len(a.model), len(b.model))
    lines = [f"{label}; {c.n_items} paired test items"]
    for o in (a, b):
        low, high = stats.interval(o, bounds=bounds_of(o, task_range))
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
              f"verdict, unadjusted (this test alone, {p_text(c.p_value)}): {decided(c, alpha=c.alpha)}"]
    if family_row is None:
        lines.append("verdict, adjusted: none (this pair is no row of a declared family in verdicts.csv, so the "
                     "unadjusted verdict above is the only one)")
    else:
        side = better_side(c.diff, family_row["p_holm"], c.higher_is_better, c.alpha)
        lines.append(f"verdict, adjusted (Holm over the {int(family_row['family_size'])} comparisons of the "
                     f"'{family_row['family']}' family: adjusted p = {fmt_p(family_row['p_holm'])}; verdicts.csv's "
                     f"row): {sentence({'a': c.a, 'b': c.b}.get(side or ''), c.recipes)}")
    return lines
