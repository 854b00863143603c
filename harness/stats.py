"""Verdicts a reader can trust: paired comparisons of two models on one task, and the intervals of one.

The data (``Outcomes``): per model and seed, the per-item outcomes of the headline test split that a
record keeps beside it (``value``, ``weight``; the metric is sum(value) / sum(weight)), aligned on
item ids: every model of a task is scored on the same test items (RL: the same environment seeds).

The test. The headline of a model is M = the mean over its S seeds of the per-seed metric m_s. A
ratio metric (WER, loss per token) is linearised first: item i of seed s counts as the pseudo-value
z_si = m_s + (v_si - m_s w_si) / mean_i(w_si), whose mean over items is m_s. The outcomes of one model
are a two-way crossed design, z_si = mu + a_s (seed) + b_i (item) + e_si, and for D = M_A - M_B

    Var(D) = V_A / S_A + V_B / S_B                              the per-seed metrics of each model (Welch)
           + max(0, var_i(d_i) - r_A / S_A - r_B / S_B) / n     test-item sampling, paired over items

with V = max(s2, r / n): s2 the variance of the per-seed metrics (S - 1 degrees of freedom), r the
seed x item residual variance (two-way ANOVA), d_i = mean_s z_A,si - mean_s z_B,si the paired item
difference. s2 estimates the seed variance plus the residual noise of a per-seed mean, r / n; the
item term removes that noise, which the seed terms already count. T = D / sqrt(Var(D)) is referred
to Student's t with Welch-Satterthwaite degrees of freedom, where each seed term keeps its S - 1
degrees of freedom, also when its seeds agree more closely than the residual noise alone allows
(s2 < r / n: V is then the noise floor r / n, never less, with S - 1 degrees of freedom, not the
(S - 1)(n - 1) of the residuals). This is the "never pool" rule for a variance component whose
estimate falls below its floor (Bancroft 1944; Searle, Casella & McCulloch 1992, ch. 4): pooling the
seed term into the residuals when seeds happen to agree made the degrees of freedom jump from about
S - 1 to several hundred and, with 3 seeds and a real seed variance, found false differences in over
a third of such draws (``scripts/calibration.py`` measures both). The 95% interval is D +/- t * SE.
With one seed on a side the seed variance is unknown: the test is then over test items only
(var_i(d_i) / n), a comparison of these trained models and not of their training recipes. Seeds are
not paired (seed s of two models shares no randomness worth pairing); items are.

The minimum detectable effect (MDE) is the true difference that this test finds with 80% power at
the chosen level, for these seed and item counts: ncp * SE', where the noncentral t with the test's
degrees of freedom exceeds the critical value with probability 0.8, and SE' is the 60% upper
confidence bound of the standard error (after Browne 1995), because the standard error is estimated too:
with few seeds the plug-in would claim an effect that is found less than 80% of the time.

Offline RL is also summarised, as ``rliable`` recommends, by the interquartile mean (IQM) of the
per-seed scores with a stratified bootstrap interval (runs resampled within the task). rliable's
own bootstrap (``rliable.library``) does not run with pandas 3 (its arch 7.2 fails to import) nor
with arch 8 (which dropped the ``random_state`` argument rliable passes), so the IQM is rliable's
``metrics.aggregate_iqm`` and the resampling is written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
from scipy import optimize, stats

ALPHA = 0.05
POWER = 0.8
ASSURANCE = 0.6  # the minimum detectable effect holds for the standard error's 60% upper bound


@dataclass
class Outcomes:
    """One model on one task: per seed (rows), per item (columns, in ``items`` order)."""

    model: str
    seeds: list[int]
    items: np.ndarray  # (n,) item ids
    value: np.ndarray  # (S, n)
    weight: np.ndarray  # (S, n)

    @classmethod
    def from_columns(cls, model: str, seeds: Sequence[int], columns: Sequence[dict[str, np.ndarray]]) -> Outcomes:
        """Stack the per-seed item columns of one model, each sorted by item id (they must be the same ids)."""
        order = [np.argsort(c["item"], kind="stable") for c in columns]
        ids = [np.asarray(c["item"])[o] for c, o in zip(columns, order)]
        if any(len(i) != len(ids[0]) or not np.array_equal(i, ids[0]) for i in ids):
            raise ValueError(f"{model}: its seeds were scored on different test items")
        if len(np.unique(ids[0])) != len(ids[0]):
            raise ValueError(f"{model}: item ids repeat")
        value, weight = (np.stack([np.asarray(c[name], dtype=float)[o] for c, o in zip(columns, order)])
                         for name in ("value", "weight"))
        return cls(model, list(seeds), ids[0], value, weight)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_items(self) -> int:
        return self.value.shape[1]

    def per_seed(self) -> np.ndarray:
        """(S,) the metric of each seed."""
        return self.value.sum(1) / self.weight.sum(1)

    def metric(self) -> float:
        return float(self.per_seed().mean())

    def pseudo(self) -> np.ndarray:
        """(S, n) linearised item values; their mean over items is each seed's metric."""
        m = self.per_seed()[:, None]
        return m + (self.value - m * self.weight) / self.weight.mean(1, keepdims=True)

    def binary(self) -> bool:
        """True where every item is a 0/1 outcome of weight 1 (accuracy, exact match)."""
        return bool(np.all(self.weight == 1) and np.all((self.value == 0) | (self.value == 1)))

    def residual_var(self) -> float:
        """The seed x item interaction variance (two-way ANOVA residual mean square); 0 for one seed."""
        z = self.pseudo()
        S, n = z.shape
        if S < 2 or n < 2:
            return 0.0
        e = z - z.mean(1, keepdims=True) - z.mean(0, keepdims=True) + z.mean()
        return float((e ** 2).sum() / ((S - 1) * (n - 1)))


@dataclass
class Comparison:
    """A vs B on one task: the difference of the headline metric (A - B), its interval and p-value.
    What that means (a verdict, a tie) is decided in one place, ``harness.verdicts``."""

    a: str
    b: str
    metric_a: float
    metric_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    se: float
    n_seeds_a: int
    n_seeds_b: int
    n_items: int
    higher_is_better: bool
    alpha: float = ALPHA
    recipes: bool = True  # False: one seed on a side, so the test compares trained models only

    @cached_property
    def mde(self) -> float:
        """The minimum detectable effect of this design (computed when first asked: it is a root search)."""
        return minimum_detectable_effect(self.se, self.df, self.alpha)


def compare(a: Outcomes, b: Outcomes, higher_is_better: bool, alpha: float = ALPHA) -> Comparison:
    """The paired test of the module docstring on two models' outcomes over the same items."""
    if a.n_items != b.n_items or not np.array_equal(a.items, b.items):
        raise ValueError(f"{a.model} and {b.model} were scored on different test items "
                         f"({a.n_items} and {b.n_items}); compare models of one task and one test split")
    za, zb = a.pseudo(), b.pseudo()
    d = za.mean(0) - zb.mean(0)  # (n,) paired item differences
    n = len(d)
    recipes = a.n_seeds > 1 and b.n_seeds > 1
    if recipes:
        parts = [seed_term(a), seed_term(b)]
        item = d.var(ddof=1) - a.residual_var() / a.n_seeds - b.residual_var() / b.n_seeds if n > 1 else 0.0
    else:
        parts, item = [], d.var(ddof=1) if n > 1 else 0.0
    var, df = satterthwaite(parts + [(max(item, 0.0) / n, n - 1)])
    diff = a.metric() - b.metric()
    se = math.sqrt(var)
    if se > 0:
        p = float(2 * stats.t.sf(abs(diff) / se, df))
    else:  # no variance at all: identical outcomes are no difference; a constant shift is certain
        p = 1.0 if diff == 0 else 0.0
    half = float(stats.t.ppf(1 - alpha / 2, df)) * se
    return Comparison(a.model, b.model, a.metric(), b.metric(), diff, diff - half, diff + half, p, df, se,
                      a.n_seeds, b.n_seeds, n, higher_is_better, alpha, recipes)


def seed_term(o: Outcomes) -> tuple[float, float]:
    """The seed term of Var(M) for one model of S > 1 seeds, (variance, degrees of freedom):
    max(s2, r / n) / S with S - 1 degrees of freedom (s2 the variance of the per-seed metrics, r / n
    the residual noise of a per-seed mean: the floor that a seed variance cannot go below)."""
    S, n = o.n_seeds, o.n_items
    return max(float(o.per_seed().var(ddof=1)), o.residual_var() / n) / S, S - 1


def satterthwaite(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """The sum of independent variance components and its Welch-Satterthwaite degrees of freedom."""
    var = sum(v for v, _ in parts)
    if var <= 0:
        return 0.0, math.inf
    return var, var ** 2 / sum(v ** 2 / max(k, 1) for v, k in parts if v > 0)


def minimum_detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER,
                              assurance: float = ASSURANCE) -> float:
    """The true difference that a two-sided t test with ``df`` degrees of freedom rejects with
    probability ``power`` at level ``alpha`` (noncentral t), for the standard error's upper
    ``assurance`` confidence bound, se * sqrt(df / chi2_(1 - assurance, df)) (Browne 1995): the
    standard error is itself estimated, from few seeds where they dominate, and the plain plug-in
    would understate the effect needed (it claims 80% power and delivers less, on average)."""
    if se == 0:
        return 0.0
    df = min(df, 1e6)  # the noncentral t of huge df is the normal, and scipy's is slow there
    se = se * math.sqrt(df / stats.chi2.ppf(1 - assurance, df))
    crit = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp: float) -> float:  # the far tail adds nothing once ncp is large (and may be NaN)
        return stats.nct.sf(crit, df, ncp) + np.nan_to_num(stats.nct.cdf(-crit, df, ncp)) - power

    high = 1.0
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high) * se)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (family-wise error), in their order. NaN stays NaN
    and does not count in the family."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out = p.copy()
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out.tolist()


def wilson(proportion: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The Wilson score interval of a proportion observed on ``n`` items: never zero-width, inside
    [0, 1] (what scipy's ``binomtest(...).proportion_ci(method='wilson')`` gives for whole counts)."""
    z = stats.norm.ppf(1 - alpha / 2)
    centre = (proportion + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(proportion * (1 - proportion) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(o: Outcomes, alpha: float = ALPHA, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """A 95% interval of one model's headline metric from its outcomes: the same variance components
    as ``compare`` (seeds, then items). Where the item values are known to lie in ``bounds`` (0/1
    outcomes: [0, 1]; the caller may pass the range a task's items take), widened to cover the Wilson
    interval of the mean rescaled to [0, 1], over the n items: a mean of values in [lo, hi] varies at
    most as a proportion does (Bhatia & Davis 2000), so this is conservative, and a row at a bound
    (100% accuracy, every episode at the best return) is never a point."""
    m, S, n = o.metric(), o.n_seeds, o.n_items
    parts = [seed_term(o)] if S > 1 else []
    item = o.pseudo().mean(0).var(ddof=1) - (o.residual_var() / S if S > 1 else 0.0) if n > 1 else 0.0
    var, df = satterthwaite(parts + [(max(item, 0.0) / n, n - 1)])
    half = float(stats.t.ppf(1 - alpha / 2, df)) * math.sqrt(var)
    low, high = m - half, m + half
    lo, hi = (0.0, 1.0) if bounds is None and o.binary() else (bounds or (math.nan, math.nan))
    if hi > lo:  # NaN bounds compare False: no widening
        w_low, w_high = wilson(min(max((m - lo) / (hi - lo), 0.0), 1.0), n, alpha)
        low, high = max(lo, min(low, lo + w_low * (hi - lo))), min(hi, max(high, lo + w_high * (hi - lo)))
    return low, high


def iqm(scores: np.ndarray) -> float:
    """The interquartile mean of per-run scores (rliable's ``aggregate_iqm``)."""
    from rliable import metrics
    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=float).reshape(-1, 1)))


def iqm_interval(scores: np.ndarray, reps: int = 2000, alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """The percentile interval of the IQM of per-run ``scores`` under the stratified bootstrap
    (runs resampled with replacement within the task, as rliable's ``StratifiedBootstrap``)."""
    scores = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(scores), size=(reps, len(scores)))
    from rliable import metrics
    boot = np.array([metrics.aggregate_iqm(scores[d].reshape(-1, 1)) for d in draws])
    return float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))
